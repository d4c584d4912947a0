"""Every Prometheus metric warmstart exports, defined once, in its own registry per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics

# a `_created` sample beside every counter and histogram only doubles the series a scrape stores
disable_created_metrics()

# Cold starts run from ~0.2 s (a tiny GGUF) to minutes (a 70B model from network storage).
COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

TRIGGERS = ("request", "keep-alive", "schedule", "prediction", "hint", "manual")


class Metrics:
    """`node_label`: many machines (`[cluster]` on): the per-model metrics of what a replica did (its start's
    phases, starts, unloads, failures, loaded seconds, the requests it answered and their time to first token)
    carry a last label `node`, the node the replica ran on ("" before one was placed, which Prometheus stores
    as no label). On one box they have no `node` label at all, so single-box queries and dashboards are
    unchanged; a cluster's are the same queries, summed over nodes or broken down `by (node)`."""

    def __init__(self, registry: CollectorRegistry | None = None, *, node_label: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        self.node_label = node_label
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        node = ["node"] if node_label else []
        self.cold_start_seconds = Histogram(
            "warmstart_cold_start_seconds", "Duration of each phase of a replica start, and phase=\"total\".",
            ["model", "engine", "phase", *node], buckets=COLD_START_BUCKETS, registry=r)
        self.cold_start_last_seconds = Gauge(
            "warmstart_cold_start_last_seconds",
            "Duration of each phase of the model's most recent successful start, and phase=\"total\".",
            ["model", "engine", "phase", *node], registry=r)
        self.requests = Counter(
            "warmstart_requests", "Requests answered, by how they were served and their HTTP status.",
            ["model", "start", "code", *node], registry=r)
        self.prompt_tokens = Counter(
            "warmstart_prompt_tokens", "Prompt tokens of answered requests, as their engine counted them (usage).",
            ["model"], registry=r)
        self.generation_tokens = Counter(
            "warmstart_generation_tokens", "Tokens generated for answered requests, as their engine counted them.",
            ["model"], registry=r)
        self.request_wait_seconds = Histogram(
            "warmstart_request_wait_seconds", "Time a request was held waiting for a replica.",
            ["model"], buckets=WAIT_BUCKETS, registry=r)
        self.ttft_seconds = Histogram(
            "warmstart_time_to_first_token_seconds", "Arrival to first token (first byte of the answer).",
            ["model", "start", *node], buckets=TTFT_BUCKETS, registry=r)
        self.replicas = Gauge(
            "warmstart_replicas", "Replicas by lifecycle state.", ["model", "state"], registry=r)
        self.queue_depth = Gauge(
            "warmstart_queue_depth", "Requests held waiting for a replica.", ["model"], registry=r)
        self.replica_loaded_seconds = Counter(
            "warmstart_replica_loaded_seconds",
            "Replica-seconds loaded (starting, warm or sleeping): the basis of cost.",
            ["model", *node], registry=r)
        self.starts = Counter(
            "warmstart_starts", "Replica starts by what triggered them and how they ended.",
            ["model", "trigger", "outcome", *node], registry=r)
        self.unloads = Counter(
            "warmstart_unloads", "Replica stops by reason.", ["model", "reason", *node], registry=r)
        self.replica_failures = Counter(
            "warmstart_replica_failures", "Replicas that failed (start failure or unexpected exit).",
            ["model", "stage", *node], registry=r)
        self.retries = Counter(
            "warmstart_request_retries", "Requests retried on a new replica after theirs died before answering.",
            ["model"], registry=r)
        self.hints = Counter(
            "warmstart_hints", "Warm hints received, by outcome.", ["model", "outcome"], registry=r)
        self.hint_charged_seconds = Counter(
            "warmstart_hint_charged_replica_seconds",
            "Replica-seconds accepted hints were charged against the hourly hint budget: the start and as long "
            "as the replica then stays loaded (the hint's span or the model's keep-alive, the longer).",
            ["model"], registry=r)
        self.runtimes = Gauge(
            "warmstart_runtimes", "Pre-initialized engine runtimes waiting for a model, by state (ready, starting).",
            ["engine", "state"], registry=r)
        self.runtime_rss_bytes = Gauge(
            "warmstart_runtime_rss_bytes", "Resident memory of the pre-initialized runtimes waiting for a model.",
            ["engine"], registry=r)
        self.runtime_seconds = Counter(
            "warmstart_runtime_seconds", "Runtime-seconds of pre-initialized runtimes kept waiting: their cost.",
            ["engine"], registry=r)
        self.runtime_handoffs = Counter(
            "warmstart_runtime_handoffs", "Cold starts that took a pre-initialized runtime.", ["engine"], registry=r)
        self.replica_tier_seconds = Counter(
            "warmstart_replica_tier_seconds",
            "Seconds per tier: tier=\"loaded\" replica-seconds loaded, "
            "tier=\"ram\" seconds held in RAM with none loaded.",
            ["model", "tier"], registry=r)
        self.ram_tier_bytes = Gauge(
            "warmstart_ram_tier_bytes", "Bytes of the model's weight files held in RAM by the RAM tier.",
            ["model"], registry=r)
        self.ram_tier_refusals = Counter(
            "warmstart_ram_tier_refusals",
            "Holds in RAM refused (memory, budget or lock limit), on demotion (the model went cold) or by hand.",
            ["model"], registry=r)
        self.audit_failures = Counter(
            "warmstart_audit_write_failures", "Audit records that could not be written.", registry=r)
        # many machines (warmstart/cluster): a start's `fetch` phase is in warmstart_cold_start_seconds too
        self.fetch_bytes = Counter(
            "warmstart_fetch_bytes", "Model bytes a node copied from a peer and accepted (sha256 checked).",
            ["model", "node", "source"], registry=r)
        self.fetch_last_gbps = Gauge(
            "warmstart_fetch_last_gigabytes_per_second", "Rate of the model's most recent peer fetch, in GB/s.",
            ["model", "node"], registry=r)
        self.fetch_refusals = Counter(
            "warmstart_fetch_refusals", "Peer transfers refused (cut, short, or a sha256 other than the manifest's).",
            ["model", "node", "source"], registry=r)
        self.node_up = Gauge("warmstart_node_up", "1 for a live cluster node, 0 for one that left.", ["node"],
                             registry=r)
        self.node_replicas = Gauge(
            "warmstart_node_replicas", "Replicas on each cluster node, by model and lifecycle state.",
            ["node", "model", "state"], registry=r)
        self.node_memory_bytes = Gauge(
            "warmstart_node_memory_bytes", "Memory of a node for engines (total) and what its replicas take (used).",
            ["node", "kind"], registry=r)

    def at(self, node: str | None) -> tuple[str, ...]:
        """The `node` label's value to append to a per-model metric's labels: (node or "",) when the metrics
        carry one (a cluster), () on one box."""
        return (node or "",) if self.node_label else ()
