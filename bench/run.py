"""One command for every benchmark: `python -m bench.run` (or `scripts/bench`).

Starts what it needs (its own database, gunicorn instances on free ports from a runtime-only venv, private
Redis where a scenario needs one) against the local PostgreSQL/Redis/NATS, runs each scenario with `hey`
(alternating A/B rounds where two things are compared) and prints a table of medians and ratios. Full
figures go to bench/results/<time>.json. `--quick` shortens every scenario (a smoke run, not figures).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable

from bench import (
    commands,
    events,
    faults,
    hardening,
    lifecycle,
    limiter,
    mcp,
    pipeline,
    registry,
    revocation,
    state,
    subjects,
    tracing,
    typed,
)
from bench.harness import ROOT, BenchDatabase

RESULTS = ROOT / "bench" / "results"


def machine() -> str:
    cpus = os.cpu_count()
    with open("/proc/meminfo") as meminfo:
        mem_gb = int(meminfo.readline().split()[1]) / 1024 / 1024
    return f"{platform.machine()}, {cpus} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}"


def scenarios(quick: bool) -> dict[str, Callable[[BenchDatabase], dict]]:
    rounds, seconds = (1, 2) if quick else (3, 5)
    return {
        # Seven rounds, not three: four servers share two cores with hey, and single rounds of this comparison
        # moved by ±30 % on a quiet machine.
        "device_list": lambda db: registry.list_vs_bare(db, rounds=1 if quick else 7, seconds=seconds),
        "pipeline": lambda db: pipeline.measure(rounds=rounds, requests_per_round=600 if quick else 1500),
        "limiter": lambda db: limiter.measure(rounds=rounds, clients=20 if quick else 100,
                                              one_client_requests=400 if quick else 2000),
        "commands": lambda db: commands.run(quick=quick),
        "typed_commands": lambda db: typed.run(quick=quick),
        "mcp": lambda db: mcp.send_command_vs_rest(db, rounds=rounds, seconds=seconds),
        "default_limits": registry.default_limits,
        "token": lambda db: registry.token_issuance(db, requests_count=500 if quick else 3000),
        "memory": lambda db: registry.worker_memory(db, total_requests=2_000 if quick else 50_000),
        "worker_classes": lambda db: registry.worker_classes(db, seconds=seconds),
        "faults": lambda db: faults.run(outage_seconds=3.0 if quick else 5.0),
        "lifecycle": lambda db: lifecycle.run(seconds=4.0 if quick else 10.0, health_requests=100 if quick else 300),
        "hardening": lambda db: hardening.run(quick=quick),
        "relay_subjects": lambda db: subjects.run(count=10_000 if quick else 50_000, rounds=rounds),
        "tracing": lambda db: tracing.measure(rounds=rounds, requests_per_round=600 if quick else 1500),
        "state": lambda db: state.run(db, quick=quick),
        "events": lambda db: events.run(db, quick=quick),
        "revocation": lambda db: revocation.run(db, quick=quick),
    }


def _span(values: list[float]) -> str:
    """A range of per-round ratios, e.g. `0.81–0.92×`."""
    return f"{min(values):.2f}–{max(values):.2f}×"


def _miss(met: bool) -> str:
    return "" if met else " — MISSED"


def rows(figures: dict) -> list[tuple[str, str, str]]:
    """(what, goal, measured) for the summary table."""
    out = []
    if "device_list" in figures:
        f = figures["device_list"]
        out.append(("GET /devices?limit=50 (1,000 devices, token, full pipeline with access lines) "
                    "vs the naive bare app (Flask+psycopg2, dict rows, datetimes, two statements), same document",
                    "≥ 1.0×", f"{f['hub_rps']:.0f} vs {f['bare_rps']:.0f} req/s = {f['ratio']:.2f}× "
                    f"(rounds {_span(f['round_ratios_naive'])}){_miss(f['ratio'] >= 1.0)}"))
        out.append(("same vs the tuned bare app (one statement, tuple rows, text timestamps, orjson)",
                    "≥ 0.8×", f"{f['hub_rps']:.0f} vs {f['tuned_rps']:.0f} req/s = {f['tuned_ratio']:.2f}× "
                    f"(rounds {_span(f['round_ratios_tuned'])}){_miss(f['tuned_ratio'] >= 0.8)}"))
        out.append(("same, hub at LOG_LEVEL=warning (no access lines)", "—",
                    f"{f['hub_quiet_rps']:.0f} vs {f['bare_rps']:.0f} req/s = {f['quiet_ratio']:.2f}×"))
    if "pipeline" in figures:
        f = figures["pipeline"]
        out.append(("pipeline overhead, median, 1 connection", "≤ 1.5 ms",
                    f"{f['overhead_median_ms_c1']:.2f} ms ({f['full']['c1']:.2f} vs {f['bare']['c1']:.2f})"))
        out.append(("pipeline overhead, median, 8 connections", "—",
                    f"{f['overhead_median_ms_loaded']:.2f} ms "
                    f"({f['full']['rps']:.0f} vs {f['bare']['rps']:.0f} req/s)"))
        out.append(("limiter Redis round trips per request", "≤ 1", f"{f['redis']['round_trips_per_request']:.1f}"))
        e = f["exactness"]
        out.append(("burst exactness, 200 concurrent over 2 instances × 2 workers", f"= {e['burst']}",
                    f"{e['admitted']} admitted, statuses {e['status_counts']}"))
    if "limiter" in figures:
        f = figures["limiter"]
        for name, label in (("100", "100/min"), ("1000000", "1,000,000/min")):
            c, one = f[name], f[name]["one_client"]
            out.append((f"limiter Redis time per request at {label}: 100 clients × 20 / one client × "
                        f"{one['sent']:,}", "equal at both limits",
                        f"{c['redis_usec_per_request']:.1f} µs / {one['redis_usec_per_request']:.1f} µs "
                        f"({one['statuses']}), {c['round_trips_per_request']:.2f} round trips, "
                        f"key: {one['key']['type']}, {one['key']['fields']} fields, {one['key']['bytes']} bytes"))
        out.append(("limiter Redis time, 1,000,000/min vs 100/min", "≈ 1.0×", f"{f['usec_ratio_1000000_vs_100']:.2f}×"))
    if "commands" in figures:
        f = figures["commands"]
        out.append(("command submit rate (2 workers × 4 threads)", "≥ 500/s",
                    f"{f['submit_per_s']:.0f}/s ({f['submit_tool']})"))
        out.append(("round trip submit → device ack → completed at 50/s, client with ?wait", "p50 ≤ 10 ms, p99 ≤ 50 ms",
                    f"p50 {f['round_trip_p50_ms']:.1f} ms, p99 {f['round_trip_p99_ms']:.1f} ms"
                    + (f" ({f['wait_answered_202']} answered 202 and polled)" if f.get("wait_answered_202") else "")))
        out.append(("same, client polling GET /messages/{id} every 2 ms", "p50 ≤ 10 ms, p99 ≤ 50 ms",
                    f"p50 {f['poll_round_trip_p50_ms']:.1f} ms, p99 {f['poll_round_trip_p99_ms']:.1f} ms"))
        out.append(("same, client polling back to back (no pause)", "—",
                    f"p50 {f['tight_poll_round_trip_p50_ms']:.1f} ms, p99 {f['tight_poll_round_trip_p99_ms']:.1f} ms"))
        out.append(("same, from stored created_at → completed_at", "—",
                    f"p50 {f['stored_p50_ms']:.1f} ms, p99 {f['stored_p99_ms']:.1f} ms"))
        out.append(("relay acks applied (NATS → PostgreSQL)", "≥ 1,000/s", f"{f['acks_per_s']:.0f}/s"))
    if "typed_commands" in figures:
        f = figures["typed_commands"]
        out.append(("typed command submit rate vs undeclared type, same body (A/B rounds)", f"≥ {typed.GOAL_RATIO}×",
                    f"{f['typed_per_s']:.0f} vs {f['untyped_per_s']:.0f}/s = {f['ratio']:.2f}×"))
        out.append(("params validation per command, in process, CPU (valid / invalid); compiling a type", "µs",
                    f"{f['validate_valid_us']:.1f} / {f['validate_invalid_us']:.1f} µs; {f['compile_us']:.0f} µs"))
    if "mcp" in figures:
        f = figures["mcp"]
        out.append(("MCP send_command (no wait) vs REST command submit, wrk -t2 -c16", f"≥ {f['goal']}×",
                    f"{f['mcp_per_s']:.0f} vs {f['rest_per_s']:.0f}/s = {f['ratio']:.2f}×"))
    if "default_limits" in figures:
        f = figures["default_limits"]
        out.append(("hey -n 1000 -c 10 /devices, default limits", "20 × 200, rest 429",
                    f"{f['statuses']}, errors {f['errors']}, then {f['next_status']} Retry-After {f['retry_after']}"))
    if "token" in figures:
        f = figures["token"]
        out.append(("token issuance (returning client)", "≥ 200/s",
                    f"{f['tokens_per_second']:.0f}/s (first check per worker: scrypt {f['scrypt_ms']:.0f} ms)"))
    if "memory" in figures:
        f = figures["memory"]
        out.append((f"RSS per worker, start → after {f['requests']:,} requests", "< 80 MB, < 10 % growth",
                    " / ".join(f"{s:.1f}→{e:.1f} MB" for s, e in zip(f["rss_start_mb"], f["rss_end_mb"], strict=False))
                    + f" (max +{f['max_growth_pct']:.1f} %)"))
    if "worker_classes" in figures:
        for label, f in figures["worker_classes"].items():
            out.append((f"worker layout {label}: /devices?limit=50", "choose default",
                        f"{f['rps']:.0f} req/s, p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms"))
    if "lifecycle" in figures:
        f = figures["lifecycle"]
        for key, label in (("sighup", "SIGHUP under load"),
                           ("sigterm_with_drain", "SIGTERM after the drain file, under load")):
            r = f[key]
            out.append((f"{label} ({f['offered_rate']:.0f} req/s offered, capacity {f['capacity']['rate']:.0f})",
                        "0 failed", f"{r['failures']} failed of {r['sent']}, p99 {r['p99_ms']} ms"
                        + (f", exit {r['exit_code']} in {r['sigterm_to_exit_seconds']} s" if "exit_code" in r else "")))
        out.append(("SIGTERM to exit: idle / with an idle keep-alive connection", "—",
                    f"{f['sigterm_to_exit_idle_seconds']} s / {f['sigterm_to_exit_with_idle_keepalive_seconds']} s"))
        out.append(("health latency p50/p99: cached / uncached", "—",
                    f"{f['health_cached']['p50_ms']}/{f['health_cached']['p99_ms']} ms / "
                    f"{f['health_uncached']['p50_ms']}/{f['health_uncached']['p99_ms']} ms"))
    if "tracing" in figures and "error" not in figures["tracing"]:
        f = figures["tracing"]
        out.append(("tracing off vs code before tracing, ping through the pipeline, median, 1 connection",
                    "not measurable",
                    f"{f['off_vs_absent_ms_c1']:+.2f} ms ({f['off']['c1']:.2f} vs {f['absent']['c1']:.2f})"))
        out.append(("tracing on, 100 % sampled, exported over OTLP/HTTP, vs off, median, 1 connection", "stated",
                    f"{f['on_vs_off_ms_c1']:+.2f} ms ({f['on']['c1']:.2f} vs {f['off']['c1']:.2f})"))
        out.append(("same, 8 connections: before / off / on", "—",
                    f"{f['absent']['rps']:.0f} / {f['off']['rps']:.0f} / {f['on']['rps']:.0f} req/s"))
    if "faults" in figures:
        f = figures["faults"]
        for phase in f["phases"]:
            out.append((f"{phase['dependency']} killed for {phase['outage_seconds']:.0f} s under load "
                        "(20 submits/s + 20 reads/s)",
                        "no 500, clear 503s, recovers",
                        f"submits {phase['submits']}, reads {phase['reads']}; "
                        f"healthy again {phase['recovery_seconds']} s after restart"))
        out.append(("commands accepted during the drill that reached `completed`", "all",
                    f"{f['completed_commands']} of {f['accepted_commands']} (missing {len(f['missing_commands'])})"))
    if "hardening" in figures:
        f = figures["hardening"]
        w = f["probes_with_waiters_full"]
        out.append((f"liveness / readiness while the ?wait bound is full ({w['requests']} x ?wait=10 from 4 clients, "
                    f"{w['waited']} waited)", "max < 1 s",
                    f"max {w['liveness']['max_ms']} / {w['readiness']['max_ms']} ms, p99 {w['liveness']['p99_ms']} / "
                    f"{w['readiness']['p99_ms']} ms"))
        out.append(("?wait requests over the bound: time to their 202", "at once",
                    f"p50 {w['over_bound_p50_ms']} ms, max {w['over_bound_max_ms']} ms"))
        n = f["api_with_nats_down"]
        out.append((f"register / submit with NATS down ({n['requests']} each; {', '.join(n['submit_answers'])})",
                    "no wait for NATS (was 2.5 s)",
                    f"p50 {n['register_p50_ms']} / {n['submit_p50_ms']} ms, max {n['register_max_ms']} / "
                    f"{n['submit_max_ms']} ms"))
        r = f["relay_with_nats_down"]
        out.append((f"relay with NATS down: {r['expired_commands']:,} expiries + {r['offline_devices']:,} offline "
                    "transitions", "no stall per event (was 0.4/s)",
                    f"{r['events_per_s']:,} events/s ({r['seconds']} s)"))
    if "relay_subjects" in figures:
        f = figures["relay_subjects"]
        for strategy, label in (("depth", "one subscription per token count (128)"), ("tail", "uaip.devices.> (1)")):
            r = f[strategy]
            out.append((f"relay acks, dotted ids, {label}", "choose",
                        f"{r['acks_per_s']:,} acks/s; received {r['messages_received']:,} msgs / "
                        f"{r['bytes_received'] / 1e6:.1f} MB; NATS thread CPU {r['subscriber_nats_thread_cpu_s']} s"))
    out += _state_rows(figures.get("state"))
    out += _events_rows(figures.get("events"))
    out += _revocation_rows(figures.get("revocation"))
    return out


def _state_rows(f: dict | None) -> list[tuple[str, str, str]]:
    if f is None:
        return []
    i, v, g, d, h = f["ingest"], f["visibility"], f["get_ratio"], f["desired"], f["history"]
    c = f["ingest_capacity"]
    return [
        (f"state reports applied through one relay ({i['devices']:,} devices × 5/s on NATS: {i['offered_per_s']:,}/s "
         f"offered, {i['published_per_s']:,}/s published)", "keeps pace",
         f"{i['steady_applied_per_s']:,}/s while publishing; all {i['applied']:,} of {i['published']:,} applied "
         f"{i['seconds']} s after the first publish ({i['applied_per_s']:,}/s overall)"),
        (f"same, capacity: {c['offered_per_s']:,}/s offered ({c['published_per_s']:,}/s published), the rate applied "
         "while publishing", f"≥ {state.INGEST_GOAL:,}/s",
         f"{c['steady_applied_per_s']:,}/s ({c['applied']:,} of {c['published']:,} applied in {c['seconds']} s)"
         f"{_miss(c['steady_applied_per_s'] >= state.INGEST_GOAL)}"),
        (f"report → visible in GET /devices/{{id}}/state at {v['background_per_s']:,.0f} reports/s "
         f"({v['probes']} probes, {v['not_visible']} not visible within {state.PROBE_TIMEOUT_S:.0f} s)",
         f"p99 ≤ {state.VISIBLE_P99_GOAL_MS} ms",
         f"p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms{_miss(v['p99_ms'] <= state.VISIBLE_P99_GOAL_MS)}"),
        (f"same, no other reports ({f['visibility_idle']['probes']} probes)", "—",
         f"p50 {f['visibility_idle']['p50_ms']:.1f} ms, p99 {f['visibility_idle']['p99_ms']:.1f} ms"),
        (f"GET /devices/{{id}}/state vs GET /devices/{{id}}, hey -c{g['concurrency']}, alternating rounds",
         f"≥ {state.GET_RATIO_GOAL}×", f"{g['state_rps']:.0f} vs {g['device_rps']:.0f} req/s = {g['ratio']:.2f}× "
         f"(rounds {_span(g['round_ratios'])}){_miss(g['ratio'] >= state.GET_RATIO_GOAL)}"),
        (f"desired PATCH → {{version, desired, delta}} at a device on NATS ({d['patches']} sequential)",
         f"p99 ≤ {state.DESIRED_P99_GOAL_MS} ms",
         f"p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms{_miss(d['p99_ms'] <= state.DESIRED_P99_GOAL_MS)}"),
        (f"history: 24 h of {h['points']:,} points, bucket=60&agg=avg ({h['buckets_returned']} buckets, "
         f"median of {h['requests']})", f"≤ {state.HISTORY_GOAL_MS} ms",
         f"{h['median_ms']:.0f} ms (max {h['max_ms']:.0f}){_miss(h['median_ms'] <= state.HISTORY_GOAL_MS)}"),
    ]


def _events_rows(f: dict | None) -> list[tuple[str, str, str]]:
    if f is None:
        return []
    lat, rest, res, mem = f["latency"], f["rest"], f["resumption"], f["memory"]
    return [
        (f"commit → event at an SSE client, {lat['streams']} open streams, {lat['offered_per_s']} events/s offered "
         f"({lat['achieved_per_s']:.0f}/s achieved; {f['server']})",
         f"p50 ≤ {events.P50_GOAL_MS} ms, p99 ≤ {events.P99_GOAL_MS} ms",
         f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (received {lat['received_of_expected']})"
         f"{_miss(lat['p50_ms'] <= events.P50_GOAL_MS and lat['p99_ms'] <= events.P99_GOAL_MS)}"),
        (f"REST p99, every stream slot taken vs no stream ({rest['offered_rest_per_s']} req/s offered, "
         f"{rest['events_per_s']} events/s)", f"≤ {events.REST_P99_GOAL:.2f}×",
         f"{rest['p99_streams_median_ms']:.1f} vs {rest['p99_none_median_ms']:.1f} ms = {rest['ratio']:.2f}× "
         f"(rounds {_span(rest['round_ratios'])}){_miss(rest['ratio'] <= events.REST_P99_GOAL)}"),
        ("memory per open stream (workers' RSS delta / streams)", "stated", f"{mem['per_stream_kb']:.0f} KB"),
        (f"resume with Last-Event-ID: {res['reconnects']} reconnects, {res['writers']} concurrent writers",
         "0 gaps, 0 duplicates", f"{res['gaps']} gaps, {res['duplicates']} duplicates in {res['received']:,} "
         f"received of {res['events']:,}{_miss(res['gaps'] == 0 and res['duplicates'] == 0)}"),
    ]


def _revocation_rows(f: dict | None) -> list[tuple[str, str, str]]:
    if f is None:
        return []
    p, e, p2 = f["in_process"], f["end_to_end"], f["propagation"]
    return [
        ("revocation check per request, in process (the limiter's script reading the revocation keys too vs "
         "without them, real Redis, alternating timeit rounds)",
         f"≤ {revocation.COST_GOAL_MS} ms", f"{p['cost_ms']:.3f} ms (rounds {min(p['round_costs_ms']):.3f}–"
         f"{max(p['round_costs_ms']):.3f}){_miss(p['cost_ms'] <= revocation.COST_GOAL_MS)}"),
        ("same check alone outside a request (one MGET, an open stream's re-check) vs a call answering at once", "—",
         f"{p['alone_cost_ms']:.3f} ms (rounds {min(p['round_alone_costs_ms']):.3f}–"
         f"{max(p['round_alone_costs_ms']):.3f})"),
        ("same, end to end: authenticated ping with vs without the check, median p50, 1 connection",
         f"≤ {revocation.COST_GOAL_MS} ms",
         f"{e['cost_ms_c1']:+.2f} ms ({e['checked']['c1']:.2f} vs {e['unchecked']['c1']:.2f}; 8 connections "
         f"{e['checked']['rps']:.0f} vs {e['unchecked']['rps']:.0f} req/s)"
         f"{_miss(e['cost_ms_c1'] <= revocation.COST_GOAL_MS)}"),
        (f"revoke on server A → refused on every worker of server B ({p2['rounds']} rounds)",
         f"≤ {revocation.PROPAGATION_GOAL_S:.0f} s", f"first 401 median {p2['first_401_median_s']:.2f} s / max "
         f"{p2['first_401_max_s']:.2f} s; every worker median {p2['every_worker_median_s']:.2f} s / max "
         f"{p2['every_worker_max_s']:.2f} s{_miss(p2['every_worker_max_s'] <= revocation.PROPAGATION_GOAL_S)}"),
    ]


def table(figures: dict) -> str:
    lines = ["| scenario | goal | measured |", "| --- | --- | --- |"]
    lines += [f"| {what} | {goal} | {measured} |" for what, goal, measured in rows(figures)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: check the scripts, not the figures")
    # choices: a mistyped name ends here, before any set-up, with the list of valid names.
    parser.add_argument("--only", nargs="*", choices=list(scenarios(quick=True)), metavar="NAME",
                        help="scenarios to run (default: all): " + ", ".join(scenarios(quick=True)))
    args = parser.parse_args()
    chosen = scenarios(args.quick)
    names = args.only or list(chosen)
    db = BenchDatabase.create()
    figures: dict = {"machine": machine(), "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    try:
        db.seed_devices(1000)
        for name in names:
            started = time.monotonic()
            print(f"[bench] {name} ...", flush=True)
            figures[name] = chosen[name](db)
            print(f"[bench] {name} done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        db.drop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nMachine: {figures['machine']}\n")
    print(table(figures))
    print(f"\nFull figures: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
