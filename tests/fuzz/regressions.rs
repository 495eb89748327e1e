//! Inputs the fuzzing found that once broke a property, kept as named tests.
//! An `#[ignore]`d test here is an open bug in `src/`, named in its comment.
