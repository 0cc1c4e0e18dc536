"""The Celery application of a scaled-out node (issue 21): queues, task name, settings.

The message carries a job's id only; the job row stays the record of truth
(:mod:`service.jobs.dispatch` publishes, :mod:`service.jobs.worker` claims and runs).
"""

from __future__ import annotations

from typing import Literal

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from service.config.settings import BrokerSettings

__all__ = ["BROKER_ERRORS", "RUN_JOB", "QueueKind", "broker_label", "make_celery",
           "message_priority", "queue_name"]

#: What publishing raises when the broker cannot be reached or refuses.
BROKER_ERRORS = (OSError, OperationalError)

#: The one task: run the job of this id.
RUN_JOB = "kidney_node.run_job"
QueueKind = Literal["gpu", "cpu"]
#: RabbitMQ priority queues (x-max-priority): new studies before earlier ones fetched
#: from the PACS, as the single-process runner orders them.
_MAX_PRIORITY = 9


def queue_name(broker: BrokerSettings, kind: str) -> str:
    return f"{broker.queue_prefix}.{kind}"


def broker_label(broker: BrokerSettings) -> str:
    """The broker's URL with its password masked, for the log."""
    return "none" if broker.url is None else maybe_sanitize_url(broker.url.get_secret_value())


def message_priority(job_priority: int) -> int:
    """RabbitMQ's priority (higher first) for a job's (0 new, negative for priors)."""
    return 5 if job_priority >= 0 else 1


def make_celery(broker: BrokerSettings) -> Celery:
    """A Celery app on ``broker.url``: late acknowledgement (a job's message is
    acknowledged once the job has ended, so the broker gives it to another worker when
    its worker dies), one message at a time per worker, no result backend (the job row
    holds the outcome), JSON only."""
    if broker.url is None:
        raise ValueError("broker.url is not set")
    exchange = Exchange(broker.queue_prefix, type="direct", durable=True)
    queues = [Queue(queue_name(broker, kind), exchange, routing_key=queue_name(broker, kind),
                    durable=True, queue_arguments={"x-max-priority": _MAX_PRIORITY})
              for kind in ("gpu", "cpu")]
    app = Celery("kidney_node", broker=broker.url.get_secret_value(), set_as_current=False)
    app.conf.update(
        task_queues=queues,
        task_default_queue=queue_name(broker, broker.queue),
        task_default_exchange=broker.queue_prefix,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options={"confirm_publish": True, "max_retries": 3},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_pool_limit=2,
    )
    # A job may run for minutes: RabbitMQ's consumer timeout (30 min by default) must
    # exceed the longest job, else it closes the channel and redelivers (operations.md).
    return app
