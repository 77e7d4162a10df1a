# The demo producer: the framework's producer restated with real Celery
# (tests/python/framework_app.py), enqueueing DEMO_SCHEDULES example schedules.
FROM python:3.11-slim
WORKDIR /app
COPY tests/python/requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && useradd --system --uid 10001 --no-create-home producer
COPY tests/python/framework.py tests/python/framework_app.py scripts/lib/demo.py ./
USER producer
CMD ["sh", "-c", "python demo.py specs --count \"$DEMO_SCHEDULES\" --out /tmp/specs.json && python framework_app.py produce --broker \"$BROKER_URL\" --db \"$DATABASE_URL\" --specs @/tmp/specs.json > /dev/null && echo \"enqueued $DEMO_SCHEDULES schedules\""]
