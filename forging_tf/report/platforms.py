"""Platforms as tables and REPORT.md name them: short labels and full descriptions, both from
the fingerprint a result records (platform.platform_fingerprint)."""


def platform_label(fingerprint: dict) -> str:
  """A short name for a platform: device, threads, oneDNN, determinism, TF32."""
  in_force = fingerprint["in_force"]
  device = in_force.get("device", fingerprint["settings"]["device"])
  parts = [device]
  if device == "cpu":
    threads = in_force["intra_op_threads"]
    parts.append(f"t{threads}" if threads else "tdef")
    if in_force["inter_op_threads"]:
      parts.append(f"i{in_force['inter_op_threads']}")
    parts.append("dnn" if in_force["onednn"] else "nodnn")
  else:
    gpus = [d for d in fingerprint["hardware"]["devices"] if d["type"] == "GPU"]
    parts.append(gpus[0].get("device_name", "gpu").replace(" ", "") if gpus else "gpu")
    parts.append("tf32" if in_force["tf32"] else "notf32")
  parts.append("det" if in_force["op_determinism"] else "nodet")
  return "/".join(parts)


def platform_labels(fingerprints: list[dict]) -> dict[str, str]:
  """Platform id -> label; platforms that share a label get their id appended."""
  by_id = {f["id"]: f for f in fingerprints}
  labels = {platform_id: platform_label(f) for platform_id, f in by_id.items()}
  shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
  return {
      platform_id: f"{label}@{platform_id[:6]}" if label in shared else label
      for platform_id, label in labels.items()
  }


def widest_simd(flags: list[str]) -> str:
  """The widest vector extension among a CPU's SIMD flags: two CPUs of one model name can differ
  in it (AVX-512 or not), and with it in their float order and their speed."""
  for prefix, name in (
      ("avx512", "AVX-512"),
      ("avx2", "AVX2"),
      ("avx", "AVX"),
      ("sve", "SVE"),
      ("asimd", "NEON"),
      ("neon", "NEON"),
      ("sse", "SSE"),
  ):
    if any(flag.startswith(prefix) for flag in flags):
      return name
  return "no SIMD flags recorded"


def describe_platform(fingerprint: dict) -> str:
  """A platform spelled out from its fingerprint: device, CPU, GPUs, software and settings."""
  in_force, software = fingerprint["in_force"], fingerprint["software"]
  cpu = fingerprint["hardware"]["cpu"]
  gpus = [
      d.get("device_name", d["name"])
      for d in fingerprint["hardware"]["devices"]
      if d["type"] == "GPU"
  ]
  cuda = (
      f", CUDA {software['cuda_version']}, cuDNN {software['cudnn_version']}"
      if software.get("cuda_build")
      else ""
  )
  return (
      f"device {in_force.get('device')}; CPU {cpu['model']} ({cpu['logical_cores']} logical "
      f"cores, {widest_simd(cpu.get('simd_flags', []))})"
      f"{'; GPU ' + ', '.join(gpus) if gpus else ''}; TensorFlow "
      f"{software['tensorflow']}{cuda}; op determinism "
      f"{'on' if in_force['op_determinism'] else 'off'}, oneDNN "
      f"{'on' if in_force['onednn'] else 'off'}, intra/inter-op threads "
      f"{in_force['intra_op_threads']}/{in_force['inter_op_threads']} (0: TensorFlow's "
      f"default), TF32 {'on' if in_force['tf32'] else 'off'}, XLA "
      f"{'on' if in_force.get('xla_auto_jit') else 'off'}"
  )


def described_platforms(fingerprints: list[dict]) -> list[tuple[str, str, str]]:
  """(label, id, description) of each distinct platform among `fingerprints`, by label."""
  by_id = {f["id"]: f for f in fingerprints}
  labels = platform_labels(fingerprints)
  return sorted(
      (labels[platform_id], platform_id, describe_platform(fingerprint))
      for platform_id, fingerprint in by_id.items()
  )


def _on(value) -> str:
  return "on" if value else "off"


def _threads(value) -> str:
  return str(value) if value else "TensorFlow's default"


def platform_differences(first: dict, second: dict) -> list[str]:
  """What tells two platforms apart, from their fingerprints: 'oneDNN on vs off', 'intra-op
  threads 1 vs TensorFlow's default', 'AVX-512 vs AVX2 (widest SIMD)', ..., first's setting
  first (empty: the same settings, hardware and TensorFlow)."""
  ours, theirs = first["in_force"], second["in_force"]
  differences = [
      f"{name} {show(ours.get(key))} vs {show(theirs.get(key))}"
      for name, key, show in (
          ("device", "device", str),
          ("oneDNN", "onednn", _on),
          ("op determinism", "op_determinism", _on),
          ("intra-op threads", "intra_op_threads", _threads),
          ("inter-op threads", "inter_op_threads", _threads),
          ("TF32", "tf32", _on),
          ("XLA", "xla_auto_jit", _on),
      )
      if ours.get(key) != theirs.get(key)
  ]
  cpus = first["hardware"]["cpu"], second["hardware"]["cpu"]
  if cpus[0]["model"] != cpus[1]["model"]:
    differences.append(f"CPU {cpus[0]['model']} vs {cpus[1]['model']}")
  simd = [widest_simd(cpu.get("simd_flags", [])) for cpu in cpus]
  if simd[0] != simd[1]:
    differences.append(f"{simd[0]} vs {simd[1]} (widest SIMD)")
  gpus = [
      ", ".join(
          d.get("device_name", d["name"]) for d in f["hardware"]["devices"] if d["type"] == "GPU"
      )
      for f in (first, second)
  ]
  if gpus[0] != gpus[1]:
    differences.append(f"GPU {gpus[0] or 'none'} vs {gpus[1] or 'none'}")
  versions = first["software"]["tensorflow"], second["software"]["tensorflow"]
  if versions[0] != versions[1]:
    differences.append(f"TensorFlow {versions[0]} vs {versions[1]}")
  return differences
