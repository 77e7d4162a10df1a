# A BlueKing plugin project's image, standing in for a team's own: Python,
# the real bk-plugin-framework 2.3.15 and what its runtime imports, and the
# test plugin project (tests/python/plugin_project). Its default command is
# the framework's own Celery worker; celerity-in-project.Dockerfile adds
# Celerity to it without changing it.
FROM python:3.11-slim
WORKDIR /project
COPY tests/python/requirements.txt tests/python/framework-requirements.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt -r /tmp/framework-requirements.txt "pydantic>=2,<3" \
    && pip install --no-cache-dir --no-deps bk-plugin-framework==2.3.15 \
    && useradd --system --uid 10001 --no-create-home plugins
COPY tests/python/plugin_project/ /project/
COPY scripts/lib/demo.py /project/demo.py
USER plugins
ENV DJANGO_SETTINGS_MODULE=plugin_project.settings \
    PYTHONPATH=/project
CMD ["python", "-m", "celery", "-A", "plugin_project.celery_app", "worker", "-Q", "plugin_schedule,plugin_callback"]
