"""Cloud side: corpora, models and trainers (torch lives here, never in edgewise.edge)."""
