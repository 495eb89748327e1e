# etcd for the compose harness's fleet profile (docker-compose.yaml, `--profile
# fleet`), FROM scratch: Debian's etcd-server binary plus exactly the shared
# libraries ldd lists for it (envoy/images/rootfs.sh). Built by `make etcd-image`;
# needs no network. No shell inside: exec-form commands only.
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/local/bin/etcd"]
