//! Which orders of upstreams the downstream role may write, and the cluster name of each.
//!
//! With `failover: within_request` the downstream role writes the name of the aggregate
//! cluster whose sub-clusters are the chain's *admitting* upstreams, in chain order. Any
//! non-empty ordered subset of a chain can be the admitting set, so a chain of n upstreams
//! needs 2^n − 1 aggregates (one-member ones included, so every attempt passes the
//! aggregate's upstream filter and the upstream role sees it).

use crate::input::InputError;
use std::collections::BTreeMap;

/// Prefix of every generated aggregate cluster.
pub use llm_breaker::aggregate::PREFIX;

/// The aggregate cluster name for an ordered list of upstreams: `llmb|a|b|c`, by the
/// filter's own function (the downstream role writes the same name).
pub fn aggregate_name(upstreams: &[String]) -> String {
    llm_breaker::aggregate::aggregate_name(upstreams.iter().map(String::as_str))
}

/// Every non-empty ordered subset of `chain`, order kept.
pub fn ordered_subsets(chain: &[String]) -> Vec<Vec<String>> {
    let n = chain.len().min(16);
    (1u32..(1u32 << n))
        .map(|mask| {
            (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| chain[i].clone())
                .collect()
        })
        .collect()
}

/// All aggregates of all chains, by name (sorted, deduplicated across routes).
/// Fails when two different orders would get the same name (a name holding `|`).
pub fn aggregates(
    chains: &[(String, Vec<String>)],
) -> Result<BTreeMap<String, Vec<String>>, InputError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, chain) in chains {
        for subset in ordered_subsets(chain) {
            let name = aggregate_name(&subset);
            match out.get(&name) {
                Some(existing) if *existing != subset => {
                    return Err(InputError::NameCollision(name))
                }
                _ => {
                    out.insert(name, subset);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_chain_of_three_has_seven_ordered_subsets_in_chain_order() {
        let got = ordered_subsets(&s(&["a", "b", "c"]));
        assert_eq!(got.len(), 7);
        for want in [
            s(&["a"]),
            s(&["b"]),
            s(&["c"]),
            s(&["a", "b"]),
            s(&["a", "c"]),
            s(&["b", "c"]),
            s(&["a", "b", "c"]),
        ] {
            assert!(got.contains(&want), "missing {want:?}");
        }
        assert!(!got.contains(&s(&["b", "a"])), "order must be kept");
    }

    #[test]
    fn names_join_the_order_with_bars() {
        assert_eq!(
            aggregate_name(&s(&["openai", "azure-openai"])),
            "llmb|openai|azure-openai"
        );
        assert_eq!(aggregate_name(&s(&["vllm"])), "llmb|vllm");
    }

    #[test]
    fn shared_subsets_of_two_routes_are_generated_once() {
        let chains = vec![
            ("a".to_string(), s(&["x", "y"])),
            ("b".to_string(), s(&["y", "z"])),
        ];
        let got = aggregates(&chains).unwrap();
        let names: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["llmb|x", "llmb|x|y", "llmb|y", "llmb|y|z", "llmb|z"]
        );
    }

    #[test]
    fn reversed_orders_get_distinct_clusters() {
        let chains = vec![
            ("a".to_string(), s(&["x", "y"])),
            ("b".to_string(), s(&["y", "x"])),
        ];
        let got = aggregates(&chains).unwrap();
        assert_eq!(got["llmb|x|y"], s(&["x", "y"]));
        assert_eq!(got["llmb|y|x"], s(&["y", "x"]));
    }

    #[test]
    fn names_that_would_collide_are_refused() {
        let chains = vec![
            ("a".to_string(), s(&["p|q", "r"])),
            ("b".to_string(), s(&["p", "q|r"])),
        ];
        assert_eq!(
            aggregates(&chains),
            Err(InputError::NameCollision("llmb|p|q|r".into()))
        );
    }
}
