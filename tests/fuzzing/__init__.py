"""graphc's fuzzer, as test helpers: what tests/test_fuzz.py generates and how it judges graphc.

- `harness`: run `graphc.cli.main(argv)` in-process under a timer, and say what is wrong
  with what it did (an internal error, a hang, stderr that is not graphc's diagnostics).
- `graphs`: Hypothesis strategies for `.graph` text, valid and near-valid.
- `mutate`: byte-level mutations of files (the shipped models).
- `files`: `--set` values, `.npy` inputs, `.npz` weights and MNIST IDX files, made and mutated.
- `targets`: what each kind of input is run through and what is required of it; the files a
  session makes once (a checkpoint from `graphc train`, MNIST-shaped IDX files).
- `campaign`: the long mode: many inputs over worker processes, failures grouped by cause,
  each cause's smallest input kept and shrunk, a markdown report.
"""
