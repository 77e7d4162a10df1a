# Celerity in a plugin project's own image: the project's image, unchanged,
# plus the celerity binary and the MariaDB client library it links to. The
# worker runs the project's Python plugins with the project's interpreter
# and reads the plugin runtime's settings (BK_PLUGIN_RUNTIME_*) from the
# environment, as the project's Celery worker does. Build the celerity image
# first (`docker compose build migrate`, tagged celerity:local), then, for a
# team's project:
#   docker build -f demo/celerity-in-project.Dockerfile --build-arg PROJECT_IMAGE=my-plugins:1.4 -t my-plugins-celerity .
ARG PROJECT_IMAGE=bk-plugin-project:demo
FROM celerity:local AS celerity

FROM ${PROJECT_IMAGE}
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=celerity /usr/local/bin/celerity /usr/local/bin/celerity
USER 10001
ENV CELERITY_HTTP_ADDR=0.0.0.0:9540 \
    CELERITY_LOG_FORMAT=json
EXPOSE 9540
STOPSIGNAL SIGTERM
ENTRYPOINT ["celerity"]
CMD ["worker", "--python", "/usr/local/bin/python"]
