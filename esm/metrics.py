"""Every Prometheus metric esm exports, declared in one place on an injected registry.

The ESM counters follow AWS's CloudWatch event-source-mapping metrics and their counting rules
(ESM-SPEC.md §7): `PolledEventCount` -> `esm_polled_events_total` (0 is added on an empty poll so
the series exists), `InvokedEventCount` counts again on retries, `FailedInvokeEventCount` includes
events of a batch whose partial response listed failures, `DeletedEventCount` counts SQS deletes.
Names use base units (seconds, bytes) and `_total` for counters; label sets are bounded (mapping
UUID, function name, source kind, outcome) and never carry message ids.
"""

from __future__ import annotations

import contextlib
import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from esm import __version__

__all__ = ["INVOKE_OUTCOMES", "LEASE_EVENTS", "MAPPING_STATES", "MappingMetrics", "Metrics", "ShardMetrics"]

_MAPPING = ("event_source_mapping_uuid", "function_name", "source")
INVOKE_OUTCOMES = ("success", "function_error", "throttled", "service_error", "payload_too_large", "fatal")
"""The `outcome` label values of `esm_invocations_total` (all created at 0 for every mapping)."""
MAPPING_STATES = ("starting", "running", "unhealthy", "disabled", "stopping", "stopped")
"""The `state` label values of `esm_mapping_state` (esm.health.MappingState)."""
LEASE_EVENTS = ("taken", "stolen", "lost", "released")
"""The `event` label values of `esm_lease_events_total`."""
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_BYTES_BUCKETS = (1024, 16384, 65536, 262144, 1048576, 2097152, 4194304, 6291456)


class Metrics:
    """The metric families, registered on the registry given (tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.build_info = Gauge(
            "esm_build_info",
            "Always 1; the labels name the running esm version and Python version.",
            ("version", "python_version"),
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.polled = Counter(
            "esm_polled_events", "Events read from the source (AWS PolledEventCount).", _MAPPING, registry=registry
        )
        self.filtered_out = Counter(
            "esm_filtered_out_events",
            "Events removed by FilterCriteria (AWS FilteredOutEventCount).",
            _MAPPING,
            registry=registry,
        )
        self.invoked = Counter(
            "esm_invoked_events",
            "Events sent to the function, again on every retry (AWS InvokedEventCount).",
            _MAPPING,
            registry=registry,
        )
        self.failed_invoke = Counter(
            "esm_failed_invoke_events",
            "Events whose invocation failed or was reported failed (AWS FailedInvokeEventCount).",
            _MAPPING,
            registry=registry,
        )
        self.deleted = Counter(
            "esm_deleted_events",
            "SQS messages deleted after processing (AWS DeletedEventCount).",
            _MAPPING,
            registry=registry,
        )
        self.delete_failures = Counter(
            "esm_delete_failures",
            "SQS messages whose delete still failed after retries (they will be redelivered).",
            _MAPPING,
            registry=registry,
        )
        self.invocations = Counter(
            "esm_invocations",
            "Invocation attempts by outcome: success (the function answered; a partial batch response "
            "included), function_error, throttled, service_error (5xx, connection), payload_too_large, fatal "
            "(the target is missing or misconfigured).",
            (*_MAPPING, "outcome"),
            registry=registry,
        )
        self.invocation_duration = Histogram(
            "esm_invocation_duration_seconds",
            "Duration of one invocation attempt, by outcome.",
            (*_MAPPING, "outcome"),
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "esm_batch_events",
            "Events per invoked batch.",
            _MAPPING,
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.payload_size = Histogram(
            "esm_batch_payload_bytes",
            "Serialized event size per invoked batch (Lambda's limit is 6 MB).",
            _MAPPING,
            buckets=_BYTES_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge("esm_in_flight_batches", "Batches being invoked right now.", _MAPPING, registry=registry)
        self.concurrency = Gauge(
            "esm_concurrency_target",
            "Concurrent batches the mapping is allowed right now (scaling or MaximumConcurrency).",
            _MAPPING,
            registry=registry,
        )
        self.visibility_extensions = Counter(
            "esm_visibility_extensions",
            "Messages whose visibility timeout was extended by the heartbeat.",
            _MAPPING,
            registry=registry,
        )
        self.messages_released = Counter(
            "esm_released_messages",
            "Messages returned to the queue unprocessed (visibility 0), e.g. on shutdown.",
            _MAPPING,
            registry=registry,
        )
        self.source_errors = Counter(
            "esm_source_errors",
            "Failed calls to the event source, by AWS error code.",
            (*_MAPPING, "code"),
            registry=registry,
        )
        self.mapping_up = Gauge(
            "esm_mapping_up",
            "1 while the mapping's source is reachable and it is polling, else 0.",
            _MAPPING,
            registry=registry,
        )

        self.mapping_info = Gauge(
            "esm_mapping_info",
            "Always 1 per configured mapping; `event_source_arn` names its queue or stream.",
            (*_MAPPING, "event_source_arn"),
            registry=registry,
        )
        self.mapping_state = Gauge(
            "esm_mapping_state",
            "1 for the mapping's current state (starting, running, unhealthy, disabled, stopping, stopped), "
            "0 for the others (the /readyz state).",
            (*_MAPPING, "state"),
            registry=registry,
        )
        self.last_poll = Gauge(
            "esm_last_poll_timestamp_seconds",
            "Unix time of the mapping's last successful read from its source (an empty one included).",
            _MAPPING,
            registry=registry,
        )
        # SQS queues, as CloudWatch's SQS metrics would show them
        self.queue_messages = Gauge(
            "esm_sqs_queue_messages",
            "Messages in the mapping's queue by state (visible, in_flight, delayed): SQS's approximate "
            "counts from GetQueueAttributes, read every metrics.queue_attributes_interval seconds.",
            (*_MAPPING, "state"),
            registry=registry,
        )
        self.oldest_message_age = Gauge(
            "esm_sqs_oldest_message_age_seconds",
            "Age (from SentTimestamp) of the oldest message of the mapping's latest receive that returned "
            "messages; 0 after a receive that found the queue empty (SQS's ApproximateAgeOfOldestMessage, "
            "seen from the poller).",
            _MAPPING,
            registry=registry,
        )
        # Hot reload (issue #5)
        self.config_reloads = Counter(
            "esm_config_reloads",
            "Configuration reloads (SIGHUP or a change of the file), by outcome: applied, or rejected "
            "(the new file is invalid and the running configuration stays).",
            ("outcome",),
            registry=registry,
        )
        self.config_last_reload_successful = Gauge(
            "esm_config_last_reload_successful",
            "1 if the last attempt to load the configuration file succeeded, 0 while the file is invalid "
            "(the previous configuration keeps running).",
            registry=registry,
        )
        self.config_last_reload_success = Gauge(
            "esm_config_last_reload_success_timestamp_seconds",
            "Unix time at which the running configuration was last loaded successfully (the start included).",
            registry=registry,
        )

        # Kinesis and DynamoDB Streams (ESM-SPEC.md §7 and issue #3)
        self.dropped = Counter(
            "esm_dropped_events",
            "Stream records discarded (record age or retries exhausted) with no on-failure destination "
            "(AWS DroppedEventCount).",
            _MAPPING,
            registry=registry,
        )
        self.destination_delivered = Counter(
            "esm_on_failure_destination_delivered_events",
            "Stream records reported to the on-failure destination (AWS OnFailureDestinationDeliveredEventCount).",
            _MAPPING,
            registry=registry,
        )
        self.destination_failures = Counter(
            "esm_destination_delivery_failures",
            "Failed attempts to deliver a failure record to the on-failure destination (AWS "
            "DestinationDeliveryFailures); esm retries them and never checkpoints past the records.",
            _MAPPING,
            registry=registry,
        )
        self.retries = Counter(
            "esm_batch_retries",
            "Stream batches retried after a function error or a reported partial failure.",
            _MAPPING,
            registry=registry,
        )
        self.bisects = Counter(
            "esm_batch_bisects",
            "Stream batches split in two after a function error (BisectBatchOnFunctionError).",
            _MAPPING,
            registry=registry,
        )
        # Leases (several replicas sharing streams through the DynamoDB lease table).
        self.leases_held = Gauge(
            "esm_leases_held",
            "Shard leases this replica holds, per mapping.",
            ["event_source_mapping_uuid"],
            registry=registry,
        )
        self.lease_events = Counter(
            "esm_lease_events",
            "Lease changes on this replica: taken (unowned or expired), stolen (from a replica above its "
            "share), lost (taken by another replica, or not renewed in time), released (shard end, shutdown).",
            ["event_source_mapping_uuid", "event"],
            registry=registry,
        )
        self.lease_unowned = Gauge(
            "esm_lease_unowned_shards",
            "Shards ready to be read whose lease had no live owner after this replica's last balance round.",
            ["event_source_mapping_uuid"],
            registry=registry,
        )
        self.lease_balance_rounds = Counter(
            "esm_lease_balance_rounds", "Lease balance rounds run by this replica.", registry=registry
        )
        self.lease_handoff_seconds = Gauge(
            "esm_lease_handoff_seconds",
            "How long the last shutdown took from the stop signal until every lease was released.",
            registry=registry,
        )
        self.replica_info = Gauge(
            "esm_replica_info", "1 while this replica takes part in the lease protocol.", ["replica"], registry=registry
        )
        self.windows_closed = Counter(
            "esm_tumbling_windows_closed",
            "Tumbling windows closed by a successful final invocation (reason final), terminated early "
            "because the state exceeded 1 MB (terminated_early), or whose state was too large to deliver "
            "(undeliverable).",
            [*_MAPPING, "reason"],
            registry=registry,
        )
        self.checkpoints = Counter(
            "esm_checkpoint_writes", "Checkpoints written (durably).", _MAPPING, registry=registry
        )
        self.checkpoint_failures = Counter(
            "esm_checkpoint_failures",
            "Checkpoint writes that failed (the previous checkpoint stays; retried with backoff).",
            _MAPPING,
            registry=registry,
        )
        self.shards_held = Gauge(
            "esm_shards_held", "Shards this process is consuming now.", _MAPPING, registry=registry
        )
        self.open_shards = Gauge(
            "esm_stream_open_shards",
            "Open shards (no ending sequence number) of the mapping's stream at its last listing: the most "
            "replicas that can share its work.",
            _MAPPING,
            registry=registry,
        )
        self.iterator_age = Gauge(
            "esm_iterator_age_seconds",
            "Age of the last record of the last invoked batch, per shard (AWS IteratorAge, in seconds).",
            (*_MAPPING, "shard"),
            registry=registry,
        )
        self.reader_behind = Gauge(
            "esm_reader_behind_seconds",
            "How far the shard reader is behind the tip of the shard (Kinesis MillisBehindLatest, in seconds; "
            "else the age of the last record read, 0 when caught up).",
            (*_MAPPING, "shard"),
            registry=registry,
        )

    def lease_event(self, mapping_uuid: str, event: str) -> None:
        """Count a lease change (taken, stolen, lost, released) of one mapping."""
        self.lease_events.labels(mapping_uuid, event).inc()

    def lease_mapping(self, mapping_uuid: str) -> None:
        """Create a mapping's lease series at 0, so that dashboards and alerts see them before any change."""
        self.leases_held.labels(mapping_uuid)
        self.lease_unowned.labels(mapping_uuid)
        for event in LEASE_EVENTS:
            self.lease_events.labels(mapping_uuid, event)

    def set_leases_held(self, mapping_uuid: str, count: int) -> None:
        """The number of leases of one mapping this replica holds."""
        self.leases_held.labels(mapping_uuid).set(count)

    def for_mapping(self, uuid: str, function_name: str, source: str) -> MappingMetrics:
        """The children of every family for one mapping (resolved once, not per event)."""
        labels = (uuid, function_name, source)
        return MappingMetrics(self, labels)


class MappingMetrics:
    """A mapping's metric children, bound to its labels."""

    def __init__(self, families: Metrics, labels: tuple[str, str, str]) -> None:
        self.families = families
        self.labels = labels
        f, lb = families, labels
        self.polled = f.polled.labels(*lb)
        self.filtered_out = f.filtered_out.labels(*lb)
        self.invoked = f.invoked.labels(*lb)
        self.failed_invoke = f.failed_invoke.labels(*lb)
        self.deleted = f.deleted.labels(*lb)
        self.delete_failures = f.delete_failures.labels(*lb)
        self.batch_size = f.batch_size.labels(*lb)
        self.payload_size = f.payload_size.labels(*lb)
        self.in_flight = f.in_flight.labels(*lb)
        self.concurrency = f.concurrency.labels(*lb)
        self.visibility_extensions = f.visibility_extensions.labels(*lb)
        self.messages_released = f.messages_released.labels(*lb)
        self.mapping_up = f.mapping_up.labels(*lb)
        self.dropped = f.dropped.labels(*lb)
        self.destination_delivered = f.destination_delivered.labels(*lb)
        self.destination_failures = f.destination_failures.labels(*lb)
        self.retries = f.retries.labels(*lb)
        self.bisects = f.bisects.labels(*lb)
        self.checkpoints = f.checkpoints.labels(*lb)
        self.checkpoint_failures = f.checkpoint_failures.labels(*lb)
        self.shards_held = f.shards_held.labels(*lb)
        self.last_poll = f.last_poll.labels(*lb)
        # Create the zero-valued series so dashboards see them before the first event (AWS emits 0).
        self.filtered_out.inc(0)
        for outcome in INVOKE_OUTCOMES:
            f.invocations.labels(*lb, outcome)

    def invocation(self, outcome: str, seconds: float) -> None:
        """Record one invocation attempt's outcome and duration."""
        self.families.invocations.labels(*self.labels, outcome).inc()
        self.families.invocation_duration.labels(*self.labels, outcome).observe(seconds)

    def window_closed(self, reason: str) -> None:
        """Count a tumbling window closed for `reason` (final, terminated_early, undeliverable)."""
        self.families.windows_closed.labels(*self.labels, reason).inc()

    def for_shard(self, shard_id: str) -> ShardMetrics:
        """The per-shard gauges of this mapping for one shard."""
        return ShardMetrics(self.families, (*self.labels, shard_id))

    def describe(self, event_source_arn: str) -> None:
        """Export the mapping's info series (its source ARN)."""
        self.families.mapping_info.labels(*self.labels, event_source_arn).set(1)

    def state(self, current: str) -> None:
        """Export the mapping's state: 1 for `current`, 0 for every other state."""
        for state in MAPPING_STATES:
            self.families.mapping_state.labels(*self.labels, state).set(1 if state == current else 0)

    def oldest_message_age(self, seconds: float) -> None:
        """The age of the oldest message of the latest receive (SQS mappings only)."""
        self.families.oldest_message_age.labels(*self.labels).set(seconds)

    def stream_open_shards(self, count: int) -> None:
        """The open shards of the stream at the last listing (stream mappings only)."""
        self.families.open_shards.labels(*self.labels).set(count)

    def queue_counts(self, visible: int, in_flight: int, delayed: int) -> None:
        """The queue's approximate message counts, as GetQueueAttributes reported them."""
        for state, value in (("visible", visible), ("in_flight", in_flight), ("delayed", delayed)):
            self.families.queue_messages.labels(*self.labels, state).set(value)

    def source_error(self, code: str) -> None:
        """Count a failed call to the source by its (bounded) AWS error code."""
        self.families.source_errors.labels(*self.labels, code).inc()


class ShardMetrics:
    """A shard's gauges; `remove` drops its series when the shard is done, keeping label sets bounded."""

    def __init__(self, families: Metrics, labels: tuple[str, str, str, str]) -> None:
        self._families = families
        self._labels = labels
        self.iterator_age = families.iterator_age.labels(*labels)
        self.reader_behind = families.reader_behind.labels(*labels)

    def remove(self) -> None:
        """Forget this shard's series (after SHARD_END)."""
        for family in (self._families.iterator_age, self._families.reader_behind):
            with contextlib.suppress(KeyError):
                family.remove(*self._labels)
