//! Test support for llm-breaker.
