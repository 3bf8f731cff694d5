"""The checks of scripts/cluster.sh (the cluster in a box), stdlib only (Python 3.11).

Subcommands:
  ports N                   N free loopback TCP ports, one a line
  rules SRC DST FOR         copy the chart's rules with KassaReplicaDown's `for:` set to FOR
  check --facts FILE        every check after the load; prints a summary, exits 1 on failure

It reads what the run left behind (the load generator's JSON reports, HAProxy's request
log, the SMTP sink's messages) and asks the run's Prometheus; it never starts or stops a
process.
"""

import argparse
import json
import math
import re
import socket
import sys
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def rewrite_rules(src, dst, for_):
    """The chart's rules, KassaReplicaDown's `for:` replaced (a short outage fires it)."""
    text = Path(src).read_text(encoding="utf-8")
    block = re.search(r"- alert: KassaReplicaDown\n(?:(?!\s*- alert:).*\n)*", text)
    if not block:
        sys.exit(f"{src}: no KassaReplicaDown alert")
    rule, n = re.subn(r"(\n\s+for: )\S+", rf"\g<1>{for_}", block.group(0), count=1)
    if n != 1:
        sys.exit(f"{src}: KassaReplicaDown has no `for:`")
    Path(dst).write_text(text[: block.start()] + rule + text[block.end():], encoding="utf-8")


class Checks:
    def __init__(self):
        self.passed = []
        self.failed = []
        self.notes = []

    def ok(self, condition, what, why=""):
        if condition:
            self.passed.append(what)
        else:
            self.failed.append(f"{what}: {why}" if why else what)
        return condition

    def note(self, text):
        self.notes.append(text)


# ---------------------------------------------------------------- load reports ----


# Without a kill, the share of requests that may be asked to come back (503 with Retry-After).
BACKPRESSURE_SHARE = 0.01


def check_report(checks, name, path, interrupted_allowed):
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        checks.ok(False, f"{name}: the load generator's report", f"cannot read {path}: {e}")
        return 0
    for passed in report.get("checks_passed", []):
        checks.note(f"{name}: ok: {passed}")
    violations = report.get("violations", [])
    checks.ok(not violations, f"{name}: every invariant check passes",
              "; ".join(violations[:10]))
    unexpected = report.get("unexpected_errors")
    checks.ok(unexpected == 0, f"{name}: no unexpected answer", f"{unexpected} unexpected")
    bad = []
    answered = 0
    for op in report.get("operations", []):
        for o in op.get("outcomes", []):
            answered += o["count"]
            status = o["status"]
            if status == 0 or (status >= 500 and status != 503):
                bad.append(f"{op['op']} -> {status} {o['code']} x{o['count']}")
            elif status == 503:
                checks.note(f"{name}: {op['op']} -> 503 {o['code']} x{o['count']}"
                            " (Kassa sends Retry-After with every 503; HAProxy's log is checked)")
    checks.ok(answered > 0, f"{name}: requests were made", "the report records none")
    checks.ok(not bad, f"{name}: no recorded answer is a 5xx other than 503, nor no answer",
              "; ".join(bad))
    interrupted = report.get("interrupted_total")
    if interrupted is None:
        checks.ok(not interrupted_allowed, f"{name}: the report counts interrupted requests",
                  "no `interrupted_total` in the report (kassa-loadtest without "
                  "--retry-interrupted?)")
        return 0
    detail = ", ".join(f"{op['op']} {op['interrupted']}" for op in report.get("operations", [])
                       if op.get("interrupted")) or "none"
    by = report.get("interrupted_by") or {}
    kinds = ", ".join(f"{what} x{n}" for what, n in sorted(by.items())) or "none"
    longest = report.get("longest_interruption_ms") or 0
    checks.note(f"{name}: {interrupted} attempt(s) sent again after no answer, a 502/504 or "
                f"a 503 with Retry-After ({detail}; {kinds}; the longest wait for an answer "
                f"{longest / 1000:.1f} s)")
    if not interrupted_allowed:
        # Without a kill, no answer may be lost. A 503 with Retry-After is Kassa asking the
        # client to come back (a hot SKU whose replicas kept losing its writes to each other,
        # a store timing out under the peak): allowed, as a small share of the requests.
        backpressure = sum(n for what, n in by.items() if what.startswith("503 "))
        lost = interrupted - backpressure
        checks.ok(lost == 0, f"{name}: no request lost its answer (no replica was killed)",
                  f"{lost} interrupted: {kinds}")
        limit = max(1, answered * BACKPRESSURE_SHARE)
        checks.ok(backpressure <= limit,
                  f"{name}: 503s with Retry-After at most {BACKPRESSURE_SHARE:.0%} of the "
                  "requests", f"{backpressure} of {answered}: {kinds}")
    return interrupted


# ---------------------------------------------------------------- HAProxy log ----

# log-format "%Ts.%ms %b/%s %ST %tsc %rc %Tt %HM %HP %{+Q}hs" (cluster.sh); `hs` is
# {Retry-After}.
LOG_LINE = re.compile(
    r"^(?P<ts>\d+\.\d+) (?P<backend>\S+)/(?P<server>\S+) (?P<status>-?\d+) (?P<term>\S+) "
    r"(?P<retries>\+?-?\d+) (?P<total>-?\d+) (?P<method>\S+) (?P<path>\S+) (?P<headers>.*)$"
)


def check_balancer_log(checks, path, killed_server, kill_at, restart_ready_at):
    """Every 5xx the balancer answered: a 502/504 only from the killed replica, while it was
    dead; a 503 only from a replica (Kassa's, with Retry-After), never HAProxy's own."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    requests = Counter()
    by_server = Counter()
    interrupted = []
    retried = []
    bad = []
    for line in lines:
        m = LOG_LINE.match(line)
        if not m:
            continue
        status = int(m["status"])
        requests[status // 100] += 1
        by_server[m["server"]] += 1
        if m["retries"] not in ("0", "+0"):
            retried.append(f"{m['method']} {re.sub(r'[0-9a-f-]{20,}', '{id}', m['path'])}"
                           f" -> {m['status']} via {m['server']}")
        ts = float(m["ts"])
        where = f"{m['method']} {m['path']} -> {status} via {m['server']} ({m['term']})"
        if status in (502, 504):
            in_window = kill_at is not None and kill_at - 0.5 <= ts <= (restart_ready_at or ts)
            if m["server"] == killed_server and in_window:
                interrupted.append((ts, m["method"], m["path"]))
            else:
                bad.append(f"{where} at {ts:.3f}")
        elif status == 503:
            retry_after = m["headers"].strip('"{}')
            if m["server"] in ("<NOSRV>", "-") or not retry_after:
                bad.append(f"{where} without Retry-After at {ts:.3f}")
        elif status >= 500 or status < 0:
            bad.append(f"{where} at {ts:.3f}")
    total = sum(requests.values())
    checks.ok(total > 0, "the balancer logged the requests", f"no request line in {path}")
    checks.note("balancer: " + ", ".join(f"{k}xx {v}" for k, v in sorted(requests.items()))
                + "; by replica: " + ", ".join(f"{k} {v}" for k, v in sorted(by_server.items())))
    checks.ok(not bad, "the balancer answered no 5xx but 503 with Retry-After and the 502s of "
              "requests in flight on the killed replica", "; ".join(bad[:10]))
    if retried:
        checks.note(f"balancer: {len(retried)} request(s) it sent again elsewhere after a "
                    "replica refused the connection: " + ", ".join(
                        f"{k} x{v}" for k, v in Counter(retried).most_common(8)))
    if interrupted:
        paths = Counter(f"{m} {re.sub(r'[0-9a-f-]{20,}', '{id}', p)}" for _, m, p in interrupted)
        checks.note(f"balancer: {len(interrupted)} request(s) in flight on {killed_server} "
                    "when it was killed, answered 502: "
                    + ", ".join(f"{k} x{v}" for k, v in paths.most_common()))
    return len(interrupted)


# ---------------------------------------------------------------- Prometheus ----


def prom(url, api, **params):
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}/api/v1/{api}?{query}", timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{api} {params}: {body}")
    return body["data"]


def has_value(series, want=None):
    for s in series:
        for _, v in s.get("values", []):
            value = float(v)
            if math.isnan(value):
                continue
            if want is None or value == want:
                return True
    return False


def check_prometheus(checks, url, start, end, killed_instance, dashboard):
    window = dict(start=f"{start:.3f}", end=f"{end:.3f}", step="1")
    if killed_instance:
        check_replica_down(checks, url, window, killed_instance)
    rules = prom(url, "rules")["groups"]
    loaded = sum(len(g["rules"]) for g in rules)
    unhealthy = [r["name"] for g in rules for r in g["rules"] if r.get("health") != "ok"]
    checks.ok(loaded > 0 and not unhealthy, f"the chart's {loaded} rules are loaded and "
              "evaluate", f"unhealthy: {unhealthy}" if unhealthy else "no rule loaded")
    alerts = sorted({a["labels"]["alertname"] for a in prom(url, "alerts")["alerts"]})
    checks.note(f"alerts pending or firing at the end: {', '.join(alerts) or 'none'}")
    check_dashboard(checks, url, window, start, end, dashboard)


def check_replica_down(checks, url, window, killed_instance):
    start, end = float(window["start"]), float(window["end"])
    up = prom(url, "query_range", query=f'up{{job="kassa",instance="{killed_instance}"}}',
              **window)["result"]
    checks.ok(has_value(up, 0.0), f"Prometheus saw the killed replica down (up == 0 for "
              f"{killed_instance})", f"up was never 0 in [{start:.0f}, {end:.0f}]: {up}")
    checks.ok(has_value(up, 1.0), f"Prometheus saw the killed replica up again",
              "up was never 1")
    firing = prom(url, "query_range",
                  query='ALERTS{alertname="KassaReplicaDown",alertstate="firing"}',
                  **window)["result"]
    instances = sorted({s["metric"].get("instance", "?") for s in firing if has_value([s])})
    checks.ok(killed_instance in instances, "the KassaReplicaDown alert fired for the killed "
              "replica", f"firing for {instances or 'none'}")
    if instances:
        checks.note(f"KassaReplicaDown fired for {', '.join(instances)}")


def check_dashboard(checks, url, window, start, end, dashboard):
    panels = json.loads(Path(dashboard).read_text(encoding="utf-8"))["panels"]
    empty = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            # Grafana's own variables, as Grafana would fill them for this short window.
            for var, value in (("$__rate_interval", "1m"), ("$__interval", "1s"),
                               ("$__range", f"{int(end - start)}s")):
                expr = expr.replace(var, value)
            series = prom(url, "query_range", query=expr, **window)["result"]
            if not has_value(series):
                empty.append(f"{panel['title']}: {expr}")
    count = sum(len(p.get("targets", [])) for p in panels)
    checks.ok(not empty, f"all {count} queries of the dashboard's {len(panels)} panels return "
              "data", "no data for " + "; ".join(empty))


# ---------------------------------------------------------------- mail ----


# A SIGKILL between the SMTP server's acceptance and the store's record of "sent" resends
# that email after the restart (with the same Message-ID, so mail clients show it once):
# delivery is at least once, and no SMTP client can make it exactly once. The window is a
# store write, so a kill catches a few emails in it at most.
MAX_DUPLICATES_PER_KILL = 10


def check_mail(checks, mail_dir, kills):
    """One confirmation per paid order: counts the messages per Message-ID (it names the
    order and the kind of email; a resend carries the same one). Without a kill no email may
    be sent twice; a kill may resend the few it interrupted between the server's acceptance
    and the record of "sent" (counted and reported)."""
    ids = Counter()
    for path in Path(mail_dir).glob("*.eml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        m = re.search(r"^Message-ID:\s*(\S+)", text, re.IGNORECASE | re.MULTILINE)
        ids[m.group(1) if m else f"(no Message-ID: {path.name})"] += 1
    duplicates = {k: v for k, v in ids.items() if v > 1}
    extra = sum(v - 1 for v in duplicates.values())
    checks.ok(sum(ids.values()) > 0, "the SMTP sink received confirmations", f"none in {mail_dir}")
    listed = ", ".join(f"{k} x{v}" for k, v in list(duplicates.items())[:10])
    if kills:
        checks.note(f"duplicate emails: {extra} over {kills} kill(s) ({listed or 'none'})")
        allowed = MAX_DUPLICATES_PER_KILL * kills
        checks.ok(extra <= allowed,
                  f"every email sent once but for at most {allowed} resent after the kill "
                  f"({len(ids)} messages, {extra} duplicate(s))",
                  f"{extra} duplicates: {listed}")
    else:
        checks.ok(not duplicates, f"every email sent once ({len(ids)} messages, no duplicate)",
                  f"{len(duplicates)} sent more than once: {listed}")


# ---------------------------------------------------------------- diagnosis ----


def stale_reads(checks, facts):
    """For every SKU a report found not conserved: what each replica answers for it, read
    directly (not through the balancer), and whether they agree."""
    skus = set()
    for key in ("storefront_report", "flash_sale_report"):
        try:
            report = json.loads(Path(facts[key]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for v in report.get("violations", []):
            m = re.match(r"(\S+) stock not conserved", v)
            if m:
                skus.add(m.group(1))
    for sku in sorted(skus)[:5]:
        seen = {}
        for name, base in sorted(facts["replicas"].items()):
            try:
                with urllib.request.urlopen(f"{base}/api/products/{sku}", timeout=10) as r:
                    seen[name] = json.load(r).get("available")
            except (OSError, ValueError) as e:
                seen[name] = f"error {e}"
        checks.note(f"diagnosis: {sku} available as each replica answers it now: "
                    + ", ".join(f"{k} {v}" for k, v in seen.items())
                    + (" (they disagree: a replica answers from its ProductActor's cached "
                       "state, stale after other replicas' writes)"
                       if len(set(map(str, seen.values()))) > 1 else ""))


# ---------------------------------------------------------------- main ----


def check(facts_path):
    facts = json.loads(Path(facts_path).read_text(encoding="utf-8"))
    checks = Checks()
    chaos = facts["kill_at"] is not None
    interrupted = check_report(checks, "storefront", facts["storefront_report"], chaos)
    check_report(checks, "flash-sale", facts["flash_sale_report"], False)
    for name, seconds in facts.get("timings", {}).items():
        checks.note(f"timing: {name} {seconds:.1f}s")
    if chaos:
        checks.ok(facts["drained_exit"] == 0, "the SIGTERM'd replica drained and exited 0",
                  f"exit status {facts['drained_exit']}")
        checks.ok(facts["drained_seconds"] <= facts["drain_limit"],
                  f"it stopped within {facts['drain_limit']} s of SIGTERM",
                  f"{facts['drained_seconds']:.1f} s")
    balanced_502 = check_balancer_log(checks, facts["haproxy_log"], facts["killed_server"],
                                      facts["kill_at"], facts["killed_ready_at"])
    if chaos:
        checks.note(f"the balancer answered 502 to {balanced_502} request(s); the load "
                    f"generator retried {interrupted}")
    try:
        check_prometheus(checks, facts["prometheus"], facts["start"], facts["end"],
                         facts["killed_instance"] if chaos else None, facts["dashboard"])
    except (OSError, ValueError, RuntimeError) as e:
        checks.ok(False, "Prometheus answers the checks' queries", str(e))
    stale_reads(checks, facts)
    check_mail(checks, facts["mail_dir"], 1 if chaos else 0)

    for note in checks.notes:
        print(f"   {note}")
    for passed in checks.passed:
        print(f"ok   {passed}")
    for failed in checks.failed:
        print(f"FAIL {failed}")
    print(f"cluster: {len(checks.passed)} checks passed, {len(checks.failed)} failed")
    return 1 if checks.failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ports")
    p.add_argument("count", type=int)
    p = sub.add_parser("rules")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("for_")
    p = sub.add_parser("check")
    p.add_argument("--facts", required=True)
    args = parser.parse_args()
    if args.command == "ports":
        print("\n".join(map(str, free_ports(args.count))))
    elif args.command == "rules":
        rewrite_rules(args.src, args.dst, args.for_)
    else:
        sys.exit(check(args.facts))


if __name__ == "__main__":
    main()
