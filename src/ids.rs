//! Typed indexes into the validated configuration: an upstream, a breaker cell, a
//! route. They keep the three index spaces apart (a cell index used as an upstream's
//! compiles no more), and every table indexed by them (config, worker records,
//! metrics) is built from the same config, so a lookup by id always finds its entry;
//! lookups still go through `get` and never panic.

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(usize);

        impl $name {
            /// The id of the entry at `index`.
            pub const fn new(index: usize) -> $name {
                $name(index)
            }

            /// Its position in the table it indexes.
            pub const fn index(self) -> usize {
                self.0
            }

            /// The ids of a table of `len` entries, in order.
            pub fn all(len: usize) -> impl Iterator<Item = $name> + Clone {
                (0..len).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// An upstream: its position in `Config::upstreams`.
    UpstreamId
);
id!(
    /// A breaker cell (an upstream, or an upstream and model): its position in
    /// `Config::cells`.
    CellId
);
id!(
    /// A route: its position in `Config::routes`.
    RouteId
);
