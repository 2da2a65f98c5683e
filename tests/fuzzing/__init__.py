"""graphc's fuzzer, as test helpers: what tests/test_fuzz.py generates and how it judges graphc.

- `harness`: run `graphc.cli.main(argv)` in-process under a timer, and say what is wrong
  with what it did (an internal error, a hang, stderr that is not graphc's diagnostics).
- `graphs`: Hypothesis strategies for `.graph` text, valid and near-valid.
- `mutate`: byte-level mutations of text (the shipped models, or generated graphs).
- `files`: `--set` values, `.npy` inputs, `.npz` weights and MNIST IDX files, made and mutated.
- `campaign`: the long mode: many inputs over worker processes, failures grouped by cause,
  each cause's smallest input kept and minimized.
"""
