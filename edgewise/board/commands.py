"""``edgewise board create|start|stop|list|destroy``: emulated arm64 boards (see edgewise.board)."""

from __future__ import annotations

import argparse
import json


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the board's name (lowercase letters, digits, '-'); also its inventory name")


def board_create_add_arguments(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument(
        "--profile",
        default="rpi5",
        help="the device it stands for: rpi5 (default), rpi4, or a jetson-* profile (no CUDA: TensorRT "
        "unavailable, so the ONNX fallback runs)",
    )
    p.add_argument("--start", action="store_true", help="start it after creating it")
    p.add_argument("--port", type=int, help="with --start: the ssh port on 127.0.0.1 (default: a free one)")


def board_create_run(args: argparse.Namespace) -> int:
    from edgewise.board.board import create_board

    board = create_board(args.name, args.profile)
    if args.start:
        board.start(args.port)
    return 0


def board_start_add_arguments(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--port", type=int, help="ssh port on 127.0.0.1 (default: a free one)")


def board_start_run(args: argparse.Namespace) -> int:
    from edgewise.board.board import open_board

    board = open_board(args.name)
    info = board.start(args.port)
    print(f"ssh: {' '.join(board.target().ssh_argv(None))}")
    print(f"deploy: edge-deploy --host {info['name']} BUNDLE (the inventory has its profile and ssh key)")
    return 0


def board_stop_add_arguments(p: argparse.ArgumentParser) -> None:
    _name(p)


def board_stop_run(args: argparse.Namespace) -> int:
    from edgewise.board.board import open_board

    open_board(args.name).stop()
    return 0


def board_destroy_add_arguments(p: argparse.ArgumentParser) -> None:
    _name(p)


def board_destroy_run(args: argparse.Namespace) -> int:
    from edgewise.board.board import open_board

    open_board(args.name).destroy()
    return 0


def board_list_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def board_list_run(args: argparse.Namespace) -> int:
    from edgewise.board.board import boards_dir, list_boards

    rows = [b.describe() for b in list_boards()]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no boards yet ({boards_dir()}): edgewise board create NAME --profile rpi5")
    else:
        for r in rows:
            where = f"127.0.0.1:{r['port']}" if r["state"] == "running" else "-"
            print(f"{r['name']:16} {r['profile']:18} {r['state']:8} {where:16} {r['note']}")
    return 0
