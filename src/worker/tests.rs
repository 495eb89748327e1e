//! Native tests of the worker core.
