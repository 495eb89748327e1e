# The filter as a Wasm OCI image for Istio (`make oci`): FROM scratch, one layer
# holding /plugin.wasm — the "compat" layout Istio's image fetcher accepts
# (it reads plugin.wasm from the image's last layer).
FROM scratch
COPY plugin.wasm /plugin.wasm
