r"""Smaller traces: zarr's lossless codecs on real checkpoints, early and late in training.

Trains LeNet/MNIST and VGGmini/CIFAR-10 (b = 100, seed 0, as forging-train does) for
--lenet_steps and --vggmini_steps steps and takes, for each, the pairs (theta_0, theta_1)
("early") and (theta_{T-1}, theta_T) ("late"). Every codec zarr offers for a float32 chunk
(blosc with lz4 or zstd and no, byte or bit shuffle; zstd; gzip) is run on the later checkpoint
of each pair, one chunk per checkpoint as the trace stores them, on one thread as the trace
writer runs it:
  compression   raw bytes / stored bytes (> 1: smaller)
  encode_MBps   MB of checkpoint compressed per second (the writer's extra work)
  decode_MBps   MB of checkpoint decompressed per second (the reader's)
Uncompressed is the baseline: its "encode" is the copy into the chunk's bytes.

A delta against the previous checkpoint: zarr's filters act inside one chunk, and a chunk holds
one checkpoint (each is written once, in place, and its digest committed after it; SPEC and
docs/TRACE_FORMAT.md). The only zarr-native way to take a difference across checkpoints is a
chunk of two rows, transposed so that each parameter's two values are adjacent, through
numcodecs' Delta filter, which subtracts float32 values; decoding adds them back, which does not
give back every value bitwise (`float_delta_roundtrip_wrong` counts the parameters it gets
wrong), so it is not lossless. What a lossless delta would buy is measured anyway, as a bound:
the XOR of the two checkpoints' bits, compressed by the same codecs (`xor_delta`).

ratio = the best compression ratio among the codecs on VGGmini's late checkpoint; fast_s and
baseline_s = seconds to encode one such checkpoint with that codec / to copy it uncompressed.

  python benchmarks/trace_codecs.py [--lenet_steps=1000] [--vggmini_steps=40] [--repeats=5]
"""

import statistics
import time

import numcodecs
import numpy as np
from absl import app
from absl import flags
from numcodecs import blosc

from forging_tf import data
from forging_tf.train import train_lib

import _results

_LENET_STEPS = flags.DEFINE_integer("lenet_steps", 1000, "LeNet training steps.", lower_bound=1)
_VGGMINI_STEPS = flags.DEFINE_integer("vggmini_steps", 40, "VGGmini training steps.", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
    "repeats", 5, "Timed repeats per codec and checkpoint.", lower_bound=1
)
_DATA_DIR = _results.define_data_dir()

# zarr v3 codec configurations (as they would stand in the array's metadata) and the numcodecs
# codec that implements each.
_SHUFFLES = {"noshuffle": blosc.NOSHUFFLE, "shuffle": blosc.SHUFFLE, "bitshuffle": blosc.BITSHUFFLE}


def _codecs() -> dict[str, numcodecs.abc.Codec]:
  codecs = {}
  for cname, levels in (("lz4", (5,)), ("zstd", (1, 3, 5))):
    for level in levels:
      for shuffle, code in _SHUFFLES.items():
        codecs[f"blosc-{cname}{level}-{shuffle}"] = numcodecs.Blosc(cname, level, code, 0)
  codecs["zstd1"] = numcodecs.Zstd(level=1)
  codecs["zstd3"] = numcodecs.Zstd(level=3)
  codecs["gzip1"] = numcodecs.GZip(level=1)
  return codecs


def _seconds(work, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    work()
    times.append(time.perf_counter() - began)
  return statistics.median(times)


def _measure(codec, raw: np.ndarray, repeats: int) -> dict:
  encoded = codec.encode(raw)
  decoded = np.frombuffer(codec.decode(encoded), raw.dtype)
  assert np.array_equal(decoded.view(np.uint32), raw.view(np.uint32)), "not lossless"
  mb = raw.nbytes / 1e6
  return {
      "compression": raw.nbytes / len(encoded),
      "stored_bytes": len(encoded),
      "encode_MBps": mb / _seconds(lambda: codec.encode(raw), repeats),
      "decode_MBps": mb / _seconds(lambda: codec.decode(encoded), repeats),
  }


def _checkpoints(dataset, model: str, steps: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"early": (theta_0, theta_1), "late": (theta_{T-1}, theta_T)} of a real training run."""
  run = _results.training(dataset, model, 100, steps)
  kept = {}
  train_lib.run_sgd(
      run.step_fn,
      run.source,
      run.theta0,
      run.batches,
      0,
      steps,
      kept.__setitem__,
      {1, steps - 1, steps},
  )
  kept[0] = run.theta0
  return {"early": (kept[0], kept[1]), "late": (kept[steps - 1], kept[steps])}


def _float_delta_wrong(previous: np.ndarray, theta: np.ndarray) -> int:
  """Parameters that numcodecs' float32 Delta filter, on a two-row chunk transposed so that each
  parameter's values are adjacent, does not give back bitwise."""
  pairs = np.stack([previous, theta], axis=1).reshape(-1)  # p0, p0', p1, p1', ...
  delta = numcodecs.Delta(dtype="<f4")
  back = np.frombuffer(delta.decode(delta.encode(pairs)), "<f4").reshape(-1, 2)[:, 1]
  return int(np.count_nonzero(back.view(np.uint32) != theta.view(np.uint32)))


def main(argv):
  del argv
  blosc.use_threads = False  # One thread, as in the trace writer.
  platform = _results.applied_platform()
  repeats = _REPEATS.value
  cases = {}
  for model, name, steps in (
      ("lenet", "mnist", _LENET_STEPS.value),
      ("vggmini", "cifar10", _VGGMINI_STEPS.value),
  ):
    dataset = data.load_dataset(name, _DATA_DIR.value)
    for when, (previous, theta) in _checkpoints(dataset, model, steps).items():
      raw = np.ascontiguousarray(theta, "<f4")
      xor = (previous.view(np.uint32) ^ theta.view(np.uint32)).view("<f4")
      copy_s = _seconds(lambda raw=raw: bytes(memoryview(raw).cast("B")), repeats)
      case = {
          "steps_trained": steps,
          "step": 1 if when == "early" else steps,
          "bytes": raw.nbytes,
          "uncompressed_copy_MBps": raw.nbytes / 1e6 / copy_s,
          "float_delta_roundtrip_wrong": _float_delta_wrong(previous, theta),
          "codecs": {},
          "xor_delta": {},
      }
      for codec_name, codec in _codecs().items():
        case["codecs"][codec_name] = _measure(codec, raw, repeats)
        case["xor_delta"][codec_name] = _measure(codec, xor, repeats)
      cases[f"{model}_{when}"] = case
      best = max(case["codecs"], key=lambda c: case["codecs"][c]["compression"])
      print(f"{model} {when}: best {best} {case['codecs'][best]['compression']:.3f}")
  late = cases["vggmini_late"]
  best = max(late["codecs"], key=lambda c: late["codecs"][c]["compression"])
  vggmini_bytes = late["bytes"]
  _results.write(
      "trace_codecs",
      ratio=late["codecs"][best]["compression"],
      fast_s=vggmini_bytes / 1e6 / late["codecs"][best]["encode_MBps"],
      baseline_s=vggmini_bytes / 1e6 / late["uncompressed_copy_MBps"],
      best_codec_vggmini_late=best,
      ratio_definition="raw / stored bytes of VGGmini's late checkpoint with the best codec; "
      "fast_s = seconds to encode it with that codec, baseline_s = to copy it uncompressed",
      cases=cases,
      settings={
          "batch_size": 100,
          "lenet_steps": _LENET_STEPS.value,
          "vggmini_steps": _VGGMINI_STEPS.value,
          "repeats": repeats,
          "threads": 1,
          "numcodecs": numcodecs.__version__,
      },
      platform=platform,
  )


if __name__ == "__main__":
  app.run(main)
