"""The toy suite most harness tests run: two nano cells on the toy dataset plugin."""
from pathlib import Path

#: the dataset plugin the toy suite loads (registers ``toy_rgbx``)
TOY_PLUGIN = str(Path(__file__).with_name("toy_plugin.py"))

TOY_SUITE = """\
name: toy
plugins: [TOY_PLUGIN]
grid:
  models: [dualcnn]
  sizes: [nano]
  fusions: [rgb_only, add]
  datasets: [{name: toy_rgbx}]
  seeds: [0]
train: {iterations: 12, batch_size: 8, lr: 0.01, threads: 1, checkpoint_every: 4}
eval: {corruptions: [clean]}
profile: {samples: 3, warmup: 1, warmup_s: 0, min_time_s: 0, max_time_s: 0}
report: {baseline: {fusion: rgb_only}}
"""
