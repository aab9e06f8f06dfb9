"""REST API classify throughput and latency: micro-batching on versus off, 1 and 32 concurrent clients.

Starts ``helpdesk-connector serve`` twice on 127.0.0.1 with the same model —
once with micro-batching (the default), once with ``--no-micro-batching`` —
and drives ``POST /api/v1/classify`` from N concurrent closed-loop clients
(each sends its next request when the previous one is answered) for a fixed
time per phase.  Prints requests/s and p50/p99 latency per phase, and the
ratio of throughput with batching on versus off.

The model: ``--model-dir DIR`` (a trained model directory, used for every
field), else the active models of ``--config FILE``, else an
all-MiniLM-L6-v2 (the shipped base model) with a fresh classification head
per field — the same architecture and cost as the default fine-tuned model.
Texts come from ``--data`` (default ``../shared/data/it_service_tickets_train.csv``,
column ``Document``; the project's sample data if that is absent).

    .venv/bin/python bench/api.py                    # both fields, 15 s per phase
    .venv/bin/python bench/api.py --fields queue --duration 20 --json
    OMP_WAIT_POLICY=ACTIVE .venv/bin/python bench/api.py   # OpenMP threads spinning (torch's default)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from bench_support import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "it_service_tickets_train.csv"
SAMPLE_DATA = ROOT / "connector" / "sample_data" / "tickets.csv"
HEAD_LABELS = {
    "queue": ["Hardware", "HR Support", "Access", "Miscellaneous", "Storage", "Purchase", "Internal Project", "Administrative rights"],
    "priority": ["low", "medium", "high"],
}


def load_texts(path: Path, n: int, seed: int = 42) -> list[str]:
    if not path.is_file():
        path = SAMPLE_DATA
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        column = "Document" if "Document" in (reader.fieldnames or []) else ("text" if "text" in (reader.fieldnames or []) else "body")
        texts = [row[column] for row in reader if row.get(column)]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def build_head_models(fields: list[str], target: Path, base: Path | None = None) -> dict[str, Path]:
    """A base model (default: the shipped all-MiniLM-L6-v2) with a fresh classification head per field
    (the same cost as a fine-tuned one)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from connector.model.train import default_base_model

    base = base or default_base_model()
    dirs = {}
    for field in fields:
        out = target / field
        if not (out / "model.safetensors").is_file():
            labels = HEAD_LABELS.get(field, ["a", "b", "c"])
            model = AutoModelForSequenceClassification.from_pretrained(
                base, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={l: i for i, l in enumerate(labels)}, local_files_only=True, use_safetensors=True,
            )
            model.save_pretrained(out, safe_serialization=True)
            AutoTokenizer.from_pretrained(base, local_files_only=True).save_pretrained(out)
            (out / "helpdesk_connector.json").write_text(
                json.dumps({"version": "minilm-head", "field": field, "labels": labels}), encoding="utf-8"
            )
        dirs[field] = out
    return dirs


def model_dirs(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], str]:
    if args.model_dir:
        return {field: Path(args.model_dir) for field in args.fields}, f"--model-dir {args.model_dir}"
    if args.config:
        from connector.config import load_config
        from connector.model.serving import active_model_dirs
        from connector.store.db import Store

        config = load_config(args.config)
        store = Store(config.store_url)
        try:
            dirs = active_model_dirs(config, store)
        finally:
            store.dispose()
        return {f: d for f, d in dirs.items() if f in args.fields}, f"active models of {args.config}"
    return build_head_models(args.fields, work / "models", args.base_model), f"{args.base_model or 'all-MiniLM-L6-v2'} base + fresh heads (untrained)"


def _workers(args: argparse.Namespace) -> int | str:
    return int(args.workers) if str(args.workers).isdigit() else "auto"


def start_server(work: Path, dirs: dict[str, Path], port: int, batching: bool, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    config = {
        "state_dir": str(work / ("state-on" if batching else "state-off")),
        "logging": {"level": "WARNING"},
        "model": {"fields": list(dirs), "paths": {f: str(d) for f, d in dirs.items()}, "device": args.device,
                  "max_length": args.max_length, "cpu_precision": args.cpu_precision,
                  "cpu_threads": args.torch_threads or "auto"},
        "api": {"port": port, "micro_batch_wait_ms": args.wait_ms, "micro_batch_max": args.batch_max,
                "micro_batch_workers": _workers(args)},
    }
    path = work / f"config-{'on' if batching else 'off'}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "connector", "serve", "--config", str(path)]
    if not batching:
        command.append("--no-micro-batching")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not become ready")


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def run_phase(url: str, texts: list[str], clients: int, duration: float, warmup: float, pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    cpu: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        # unmeasured: connections opened, every server thread has run the model once
        for _round in range(2):
            await asyncio.gather(
                *(client.post("/api/v1/classify", json={"ticket_data": texts[k % len(texts)]}) for k in range(clients))
            )
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + duration

        async def one_client(k: int) -> None:
            nonlocal errors
            i = k
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                text = texts[i % len(texts)]
                i += clients
                t0 = time.perf_counter()
                response = await client.post("/api/v1/classify", json={"ticket_data": text})
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop:
                    if response.status_code == 200:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        async def sample_cpu() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            cpu.append(cpu_seconds(pid))
            await asyncio.sleep(max(0.0, stop - time.perf_counter()))
            cpu.append(cpu_seconds(pid))

        await asyncio.gather(sample_cpu(), *(one_client(k) for k in range(clients)))
    latencies.sort()
    count = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(count - 1, int(round(p / 100 * (count - 1))))] * 1000 if count else float("nan")

    return {
        "clients": clients,
        "requests": count,
        "errors": errors,
        "requests_per_s": round(count / duration, 2),
        "p50_ms": round(pct(50), 1),
        "p99_ms": round(pct(99), 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if count else None,
        # server CPU time per answered request: robust to other load on a shared machine
        "server_cpu_ms_per_request": round((cpu[1] - cpu[0]) / count * 1000, 1) if count and len(cpu) == 2 else None,
    }


def bench_mode(work: Path, dirs: dict[str, Path], batching: bool, texts: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    port = free_port()
    proc = start_server(work, dirs, port, batching, args)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        results = []
        for clients in args.clients:
            result = asyncio.run(run_phase(url, texts, clients, args.duration, args.warmup, proc.pid))
            result["micro_batching"] = batching
            results.append(result)
            print(
                f"  batching {'on ' if batching else 'off'} {clients:>3} client(s): {result['requests_per_s']:8.1f} req/s  "
                f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                f"server CPU {result['server_cpu_ms_per_request']} ms/request  ({result['requests']} requests, {result['errors']} errors)",
                flush=True,
            )
        return results
    finally:
        stop_process(proc)


def in_process(dirs: dict[str, Path], texts: list[str], clients: int, rounds: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The micro-batcher alone (no HTTP): ``clients`` concurrent callers, CPU and wall time per text."""
    from connector.api.batching import MicroBatcher
    from connector.model.classifier import ClassifierHolder, TransformerClassifier

    from connector.config import parse_config
    from connector.model.threads import apply_cpu_threads, micro_batch_workers

    # size workers and torch threads as `serve` does
    sizing = parse_config({
        "state_dir": tempfile.gettempdir(),
        "model": {"device": args.device, "cpu_threads": args.torch_threads or "auto"},
        "api": {"micro_batch_workers": _workers(args)},
    })
    workers = micro_batch_workers(sizing)
    apply_cpu_threads(sizing, serving_api=True)
    classifier = TransformerClassifier.from_dirs(
        dirs, device=args.device, max_length=args.max_length, cpu_precision=args.cpu_precision
    )
    out = []
    for enabled in (False, True):

        async def run(enabled: bool = enabled) -> dict[str, Any]:
            batcher = MicroBatcher(
                ClassifierHolder(classifier), enabled=enabled, wait_ms=args.wait_ms, max_texts=args.batch_max, workers=workers
            )
            await batcher.start()
            await asyncio.gather(*(batcher.classify([texts[i]]) for i in range(clients)))  # warm-up
            cpu, wall, n = time.process_time(), time.perf_counter(), 0
            for r in range(rounds):
                await asyncio.gather(*(batcher.classify([texts[(r * clients + i) % len(texts)]]) for i in range(clients)))
                n += clients
            result = {
                "micro_batching": enabled, "clients": clients, "texts": n,
                "cpu_ms_per_text": round((time.process_time() - cpu) / n * 1000, 1),
                "wall_ms_per_text": round((time.perf_counter() - wall) / n * 1000, 1),
            }
            await batcher.stop()
            return result

        result = asyncio.run(run())
        print(f"  in-process, batching {'on ' if enabled else 'off'} {clients} callers: "
              f"{result['cpu_ms_per_text']} ms CPU/text, {result['wall_ms_per_text']} ms wall/text", flush=True)
        out.append(result)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fields", nargs="+", default=["queue", "priority"], help="fields (one model each)")
    parser.add_argument("--model-dir", help="a trained model directory, used for every field")
    parser.add_argument("--config", help="use the active models of this installation")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each phase")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="api.micro_batch_wait_ms")
    parser.add_argument("--batch-max", type=int, default=64, help="api.micro_batch_max")
    parser.add_argument("--workers", default="auto", help="api.micro_batch_workers (auto: one per core on a CPU)")
    parser.add_argument("--max-length", type=int, default=256, help="model.max_length")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--base-model", type=Path, help="base model for the fresh heads (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--cpu-precision", default="auto", choices=["auto", "fp32", "bf16", "int8"], help="model.cpu_precision")
    parser.add_argument("--torch-threads", type=int, help="model.cpu_threads of the servers (default: auto)")
    parser.add_argument("--work-dir", type=Path, help="keep models and configs here (default: a temporary directory)")
    parser.add_argument("--in-process-rounds", type=int, default=4,
                        help="also time the micro-batcher without HTTP (rounds of 32 concurrent callers; 0: skip)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # as `serve` does: idle OpenMP threads sleep (set before torch is imported; the environment may override it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(ROOT))
    texts = load_texts(args.data, args.texts)
    with tempfile.TemporaryDirectory(prefix="hc-bench-api-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dirs, source = model_dirs(args, work)
        print(f"model: {source}; fields {', '.join(dirs)}; {len(texts)} texts; cores {os.cpu_count()}; "
              f"workers {args.workers}, torch threads per pass {args.torch_threads or 'auto'}, cpu_precision {args.cpu_precision}, OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}; load average {os.getloadavg()[0]:.1f}; "
              f"{args.duration:.0f} s per phase", flush=True)
        off = bench_mode(work, dirs, False, texts, args)
        on = bench_mode(work, dirs, True, texts, args)
        inproc = in_process(dirs, texts, 32, args.in_process_rounds, args) if args.in_process_rounds else []
    summary: dict[str, Any] = {
        "model": source, "fields": list(dirs), "cores": os.cpu_count(), "torch_threads": args.torch_threads,
        "cpu_precision": args.cpu_precision,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "load_average_end": round(os.getloadavg()[0], 1), "results": off + on, "in_process": inproc,
    }
    for a, b in zip(off, on):
        ratio = b["requests_per_s"] / a["requests_per_s"] if a["requests_per_s"] else float("nan")
        summary[f"throughput_ratio_{a['clients']}_clients"] = round(ratio, 2)
        print(f"micro-batching on/off throughput at {a['clients']} client(s): {ratio:.2f}x")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
