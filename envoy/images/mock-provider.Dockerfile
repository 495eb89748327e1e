# The mock LLM provider (tests/harness/src/bin/mock-upstream.rs), FROM scratch: the
# release binary plus the shared libraries ldd lists for it. Built by `make images`.
# Health check without a shell: `mock-upstream --probe 127.0.0.1:8000`.
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/mock-upstream"]
CMD ["--name", "mock", "--listen", "0.0.0.0:8000"]
