ARG BASE
FROM ${BASE}
ARG REVISION=""
LABEL org.opencontainers.image.revision="${REVISION}"
COPY message.txt /message.txt
CMD ["cat", "/message.txt"]
