//! Names of the aggregate clusters of within-request failover: the downstream role
//! writes one into the route header, the generator (`envoy/gen`) writes the clusters.
//! Both call [`aggregate_name`], so the two can't drift apart.

/// Prefix of every aggregate cluster.
pub const PREFIX: &str = "llmb";

/// The aggregate cluster of an ordered list of upstreams: `llmb|a|b|c`.
pub fn aggregate_name<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> String {
    let mut name = String::from(PREFIX);
    for u in upstreams {
        name.push('|');
        name.push_str(u);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_join_the_order_with_bars() {
        assert_eq!(
            aggregate_name(["openai", "azure-openai"]),
            "llmb|openai|azure-openai"
        );
        assert_eq!(aggregate_name(["vllm"]), "llmb|vllm");
    }
}
