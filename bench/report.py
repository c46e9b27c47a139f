"""Turns bench/run.sh's runs into bench/RESULTS.md (medians, ratios) and a PNG plot."""

import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

runs_path, md_path, png_path, command = sys.argv[1:5]
runs = [json.loads(line) for line in open(runs_path)]

by = defaultdict(list)
for r in runs:
    by[(r["scenario"], r["collector"])].append(r)
every = list(dict.fromkeys(r["scenario"] for r in runs))
# Side by side: the scenarios both collectors ran; the rest are sluice alone into real backends.
scenarios = [s for s in every if by[(s, "sluice")] and by[(s, "rotel")]]
alone = [s for s in every if s not in scenarios]


def med(scenario, collector, key):
    values = [r[key] for r in by[(scenario, collector)]]
    return statistics.median(values) if values else float("nan")


def per_item_bytes(scenario, collector):
    """Bytes at the sink per item, or "-" where the backend is not the sink (Prometheus)."""
    value = med(scenario, collector, "sink_bytes_per_item")
    return f"{value:.1f}" if value == value and value > 0 else "-"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - the report says "unknown" rather than failing
        return "unknown"


def rotel_version():
    from importlib.metadata import version as pkg_version

    return pkg_version("rotel")


def rotel_binary():
    import rotel

    return os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")


lines = [
    "# Benchmarks: sluice and rotel, side by side",
    "",
    f"Made by `{command}` on {platform.node()}: {cpu_model()}, "
    f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
    f"Linux {platform.release()}. Collectors: `{version(['target/release/sluice', '--version'])}` and rotel "
    f"{rotel_version()} from PyPI (`{version([rotel_binary(), '--version'])}`).",
    "",
    "Each run: the load generator (`sluice-loadgen send`, closed loop, 8 requests in flight, 100 items per "
    "request, pre-encoded) and the counting sink (`sluice-loadgen sink`) on core 0, the collector alone on "
    "core 1. Both collectors run OTLP in -> resource attribute upsert -> batch (8192 items / 200 ms) -> OTLP "
    "out with gzip; sluice also runs its memory_limiter. Gzip on both sides because rotel compresses its "
    "export whatever its flag says: started with `--otlp-exporter-compression none` it still gzips every "
    "request, so the sink counts how each request arrives and `bench/run.sh` refuses a table where a "
    "collector sends other than configured. CPU is the collector's user+system time "
    "from /proc/<pid>/stat; peak RSS is VmHWM. Items are counted at the sink. Medians of "
    f"{max(len(v) for v in by.values())} runs, sluice and rotel alternating.",
    "",
    "`*-gzip-in`: the load generator sends gzip-compressed requests (level 1, compressed once when its "
    "pool is made), so the collector also pays for decompressing. The last column is the bytes that "
    "reached the sink per item delivered (gRPC framing included).",
    "",
    "| scenario | collector | delivered items / collector CPU-s | accepted items/s | CPU % of one core | peak RSS MiB | delivered / accepted | p99 latency ms | sink bytes per item |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]
for s in scenarios:
    for c in ("sluice", "rotel"):
        if not by[(s, c)]:
            continue
        acc = med(s, c, "items_accepted")
        dl = med(s, c, "items_delivered")
        lines.append(
            f"| {s} | {c} | {med(s, c, 'items_per_cpu_second'):,.0f} | {med(s, c, 'accepted_per_second'):,.0f} | "
            f"{med(s, c, 'cpu_percent_of_one_core'):.1f} | {med(s, c, 'peak_rss_mib'):.1f} | "
            f"{(dl / acc if acc else float('nan')):.3f} | {med(s, c, 'latency_p99_ms'):.1f} | "
            f"{per_item_bytes(s, c)} |"
        )
lines += ["", "Ratios (sluice / rotel, medians of the same run):", "",
          "| scenario | items per CPU-second | peak RSS |", "|---|---:|---:|"]
for s in scenarios:
    if by[(s, "sluice")] and by[(s, "rotel")]:
        cpu_ratio = med(s, "sluice", "items_per_cpu_second") / max(med(s, "rotel", "items_per_cpu_second"), 1e-9)
        rss_ratio = med(s, "sluice", "peak_rss_mib") / max(med(s, "rotel", "peak_rss_mib"), 1e-9)
        lines.append(f"| {s} | {cpu_ratio:.2f}x | {rss_ratio:.2f}x |")
lines += ["", "![items per CPU-second and peak RSS](results.png)", ""]
if alone:
    lines += [
        "## Sluice alone into real backends",
        "",
        "Same run, same layout (sluice alone on core 1), sluice only: rotel has no Jaeger gRPC or "
        "Prometheus remote-write exporter, and does not send uncompressed. The pipeline is the same as "
        "above with another exporter:",
        "",
        "- `traces-grpc-plain`: the side-by-side traces-over-gRPC pipeline with `compression: none`, for "
        "what gzip costs; `traces-grpc-zstd-out` the same with `compression: zstd` (level 3; rotel's OTLP "
        "exporter has gzip only). Its bytes per item at the sink flatter zstd: the load generator cycles "
        "through 32 distinct requests, so a batch of 82 repeats them, and zstd's window (unlike gzip's "
        "32 KiB) reaches back to the repeat. The compression benchmark below, on distinct requests, has "
        "the fair ratios.",
        "- `traces-grpc-zstd-in`: the load generator sends zstd (level 3); rotel answers such requests with "
        "UNIMPLEMENTED.",
        "- `traces-50k-per-second-jaeger`: 50k spans/s into the `jaeger` exporter, which translates OTLP to "
        "`jaeger.api_v2` and calls `PostSpans` on the sink playing Jaeger's collector; spans are counted by "
        "walking each `PostSpansRequest`.",
        "- `metrics-20k-per-second-prometheus`: 20k points/s with fresh timestamps into the "
        "`prometheusremotewrite` exporter and a real Prometheus (`--web.enable-remote-write-receiver`, on "
        "core 0 with the load generator, a fresh TSDB per run). Points delivered are computed from "
        "Prometheus's `prometheus_tsdb_head_samples_appended_total` (each histogram point is 17 samples).",
        "- PostgreSQL has its own script and section, below.",
        "",
        "| scenario | delivered items / sluice CPU-s | accepted items/s | CPU % of one core | peak RSS MiB | delivered / accepted | p99 latency ms | sink bytes per item |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in alone:
        acc = med(s, "sluice", "items_accepted")
        dl = med(s, "sluice", "items_delivered")
        lines.append(
            f"| {s} | {med(s, 'sluice', 'items_per_cpu_second'):,.0f} | {med(s, 'sluice', 'accepted_per_second'):,.0f} | "
            f"{med(s, 'sluice', 'cpu_percent_of_one_core'):.1f} | {med(s, 'sluice', 'peak_rss_mib'):.1f} | "
            f"{(dl / acc if acc else float('nan')):.3f} | {med(s, 'sluice', 'latency_p99_ms'):.1f} | "
            f"{per_item_bytes(s, 'sluice')} |"
        )
    lines.append("")
# Keep the hand-written sections (micro-benchmarks, analysis) that follow the marker.
MARKER = "<!-- kept by report.py -->"
kept = ""
if os.path.exists(md_path):
    previous = open(md_path).read()
    if MARKER in previous:
        kept = previous[previous.index(MARKER):]
open(md_path, "w").write("\n".join(lines) + ("\n" + kept if kept else ""))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
width = 0.38
xs = range(len(scenarios))
for i, c in enumerate(("sluice", "rotel")):
    axes[0].bar([x + (i - 0.5) * width for x in xs], [med(s, c, "items_per_cpu_second") for s in scenarios], width, label=c)
    axes[1].bar([x + (i - 0.5) * width for x in xs], [med(s, c, "peak_rss_mib") for s in scenarios], width, label=c)
for ax, title in zip(axes, ("items delivered per collector CPU-second (higher is better)", "peak RSS, MiB (lower is better)")):
    ax.set_xticks(list(xs))
    ax.set_xticklabels(scenarios, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend()
fig.tight_layout()
fig.savefig(png_path, dpi=110)
