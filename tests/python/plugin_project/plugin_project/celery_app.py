"""The project's Celery app, as the plugin runtime sets it up: the
framework's own schedule, callback and delete tasks on its queues."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plugin_project.settings")

import django  # noqa: E402

django.setup()

from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from kombu import Exchange, Queue  # noqa: E402

app = Celery("plugin_project", broker=settings.BROKER_URL)
exchange = Exchange("default", type="direct")
app.conf.task_queues = [
    Queue(name, exchange, routing_key=name, max_priority=255)
    for name in ("plugin_schedule", "plugin_callback", "schedule_delete")
]
app.conf.task_default_queue = "plugin_schedule"
app.conf.worker_hijack_root_logger = False
app.set_default()

import bk_plugin_framework.runtime.callback.celery.tasks  # noqa: E402,F401
import bk_plugin_framework.runtime.schedule.celery.tasks  # noqa: E402,F401
