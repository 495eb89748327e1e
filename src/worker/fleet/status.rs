//! The fleet's part of the `status` document: per breaker the fleet record this
//! Envoy last read (state, until, reason, instance, generation) and who probes it,
//! next to the local state, and the other instances' fresh failure streaks (summed);
//! at the top this Envoy's instance and whether etcd is
//! reachable. Nothing of the etcd cluster's credentials is known here to leak.

use crate::ids::CellId;
use crate::store::SharedStore;
use crate::worker::{Metrics, Worker};
use serde_json::{json, Value};

impl<S: SharedStore, M: Metrics> Worker<S, M> {
    /// The fleet column of one breaker.
    pub fn fleet_cell_json(&self, cell: CellId) -> Value {
        let v = self.fleet_view(cell);
        match &v.record {
            None => json!({"state": null, "prober": v.prober,
                           "failures_elsewhere": v.failures_elsewhere}),
            Some(r) => json!({
                "state": r.state.as_str(),
                "until_ms": (r.until_ms > 0).then_some(r.until_ms),
                "since_ms": r.since_ms,
                "reason": r.reason,
                "instance": r.instance,
                "generation": r.generation,
                "revision": v.rev,
                "prober": v.prober,
                "failures_elsewhere": v.failures_elsewhere,
            }),
        }
    }

    /// Adds the fleet fields to a `status` document (unchanged without `fleet`).
    pub fn fleet_status(&self, doc: String) -> String {
        let Some(f) = self.config.fleet.as_ref() else {
            return doc;
        };
        let Ok(mut v) = serde_json::from_str::<Value>(&doc) else {
            return doc;
        };
        if let Some(ups) = v.get_mut("upstreams").and_then(Value::as_array_mut) {
            for (cell, entry) in CellId::all(self.config.cells.len()).zip(ups.iter_mut()) {
                if let Some(obj) = entry.as_object_mut() {
                    obj.insert("fleet".into(), self.fleet_cell_json(cell));
                }
            }
        }
        let link = self.fleet_link();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "fleet".into(),
                json!({
                    "instance": self.fleet_instance(),
                    "etcd_cluster": f.etcd_cluster,
                    "key_prefix": f.key_prefix,
                    "connected": link.connected,
                    "failed_syncs_in_a_row": link.streak,
                }),
            );
        }
        v.to_string()
    }
}
