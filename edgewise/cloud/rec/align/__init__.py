"""Aligning a generative recommender with user feedback (issue 14): the maths, kept apart from the job.

- :mod:`.shaping`: rewards from watch time and dislikes, Duration-Aware Reward Shaping (OneRec-V2)
  and the raw watch-time / watch-fraction rewards it is compared with (numpy only);
- :mod:`.objectives`: group-relative advantages, GBPO (OneRec-V2's adaptive ratio clipping), ECPO
  (OneRec-V1's early-clipped GRPO) and the KL anchor to the reference policy (torch);
- :mod:`.rollout`: candidates sampled through the prefix trie, item log-probabilities by the
  teacher-forced forward pass, and the simulator as a feedback source (torch);
- :mod:`.reward_model`: a small learned reward model trained on logged feedback (torch).

The job that uses them is :mod:`edgewise.cloud.train.rec_align` (``edgewise train align``).
"""
