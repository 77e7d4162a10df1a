"""A minimal BlueKing plugin project for Celerity's tests: the real
bk-plugin-framework 2.3.15 with its runtime apps, MySQL through PyMySQL,
and the plugin runtime's own settings names (BK_PLUGIN_RUNTIME_*), so the
framework's Python worker and Celerity's plugin hosts run the same project.
"""

import os

import pymysql

pymysql.install_as_MySQLdb()

SECRET_KEY = "celerity-tests"
BK_APP_SECRET = "celerity-tests"
DEBUG = False
USE_TZ = False
TIME_ZONE = "Asia/Shanghai"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "bk_plugin_framework.runtime.schedule",
    "bk_plugin_framework.runtime.callback",
    "bk_plugin_framework.services.bpf_service",
    "plugin_project.apps.TracingConfig",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ.get("BK_PLUGIN_RUNTIME_DB_NAME", "celerity"),
        "HOST": os.environ.get("BK_PLUGIN_RUNTIME_DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("BK_PLUGIN_RUNTIME_DB_PORT", "3306"),
        "USER": os.environ.get("BK_PLUGIN_RUNTIME_DB_USER", "root"),
        "PASSWORD": os.environ.get("BK_PLUGIN_RUNTIME_DB_PWD", ""),
    }
}

BROKER_URL = os.environ.get("BK_PLUGIN_RUNTIME_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"bk_plugin": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
