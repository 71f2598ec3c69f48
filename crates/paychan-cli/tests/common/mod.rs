//! What these tests share beyond the test kit: the `paychan` binary driven as a child process,
//! and a raw peer that speaks the wire protocol by hand.
#![allow(dead_code, unused_imports)] // each test file uses a different part

pub mod cli;
pub mod fixture;
pub mod hand;
pub mod raw_peer;
pub mod upstream;

pub use paychan_testkit::*;
pub use paychan_testkit::{bitcoind as node, regtest};
