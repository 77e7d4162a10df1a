"""The plugin framework's broker topology, as its Celery apps configure it:
a direct exchange "default" and durable queues with x-max-priority = 255."""

from celery import Celery
from kombu import Exchange, Queue

SCHEDULE_TASK = "bk_plugin_framework.runtime.schedule.celery.tasks.schedule"


def framework_queue(name):
    return Queue(name, Exchange("default", type="direct"), routing_key=name,
                 queue_arguments={"x-max-priority": 255})


def make_app(name, broker, queue, **conf):
    """A Celery app whose default queue is `queue`, declared as the framework does."""
    app = Celery(name, broker=broker, set_as_current=False)
    app.conf.task_queues = [framework_queue(queue)]
    app.conf.task_default_queue = queue
    app.conf.broker_connection_retry_on_startup = True
    app.conf.worker_hijack_root_logger = False
    app.conf.update(conf)
    return app
