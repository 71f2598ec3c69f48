//! The watchers, from the command line against a regtest node: the payee's inside `serve`
//! broadcasts its newest commitment once final when the payer has vanished and records what
//! closed the channel; the payer's `watch` broadcasts its newest checkpoint once final, or the
//! refund at R without one, when the payee has vanished. Both pick up after a restart, from the
//! blocks they stored: what happened meanwhile (a close, a reorganization) is found then.

mod common;

use std::time::{Duration, Instant};

use bitcoin::Txid;
use common::cli::{Daemon, OpenChannel, Watch};
use serde_json::Value;

const TERMS: [&str; 6] = ["--lifetime", "40", "--step", "2", "--feerate", "2"];

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_payee_broadcasts_its_newest_commitment_once_final_and_records_the_close() {
    let OpenChannel { node, mut daemon, payee, payer, channel, .. } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let mut locktime = 0;
    for _ in 0..3 {
        locktime = payer.json(&["pay", &channel, "7000"])["locktime"].as_u64().unwrap() as u32;
    }
    // The payer vanishes, and the payee restarts: it picks the channel up from its store.
    daemon.kill9();
    let mut daemon = Daemon::start(&payee, None, &[]);
    // One block before the newest commitment is final, nothing goes out.
    node.mine_to(locktime - 1);
    std::thread::sleep(Duration::from_millis(600));
    assert!(node.mempool().is_empty(), "broadcast before final: {:?}", node.mempool());
    node.mine_to(locktime);
    let started = Instant::now();
    let txid = wait_for(Duration::from_secs(10), "commitment broadcast", || {
        node.mempool().first().copied()
    });
    println!("commitment {txid} in the mempool {:?} after the block", started.elapsed());
    let (tx, _, _) = node.get_tx(txid);
    assert_eq!(tx.lock_time.to_consensus_u32(), locktime);
    node.mine(1);
    let closing = wait_for(Duration::from_secs(10), "closure recorded", || {
        let c = payee.channel(&channel);
        (!c["closing"].is_null()).then_some(c)
    });
    assert_eq!(closing["state"], "closed on chain");
    let c = &closing["closing"];
    assert_eq!(
        (c["txid"].as_str(), c["kind"].as_str()),
        (Some(&*txid.to_string()), Some("commitment"))
    );
    // Each payment of 7,000 sat was a checkpoint (the default: every 1% of the capacity), so the
    // third payment sits on rung 3.
    assert_eq!((c["rung"].as_u64(), c["payee_sat"].as_u64()), (Some(3), Some(21_000)));
    assert_eq!(c["height"].as_u64(), Some(u64::from(locktime) + 1));

    // A restart reads the closure back and broadcasts nothing more.
    daemon.kill9();
    let daemon = Daemon::start(&payee, None, &[]);
    node.mine(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(payee.channel(&channel)["closing"], closing["closing"]);
    assert!(!daemon.log().contains("WARN"), "{}", daemon.log());

    // The payer's watcher finds the same closing transaction and stops.
    let watch = Watch::start(&payer, &[&channel]);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "watching");
    let closed = watch.next(Duration::from_secs(10));
    assert_eq!(closed["event"], "closed");
    assert_eq!(closed["closing"], closing["closing"]);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());
    assert!(payer.fails(&["pay", &channel, "1000"]).contains("closed on chain by the commitment"));
}

#[test]
fn a_close_reorganized_out_is_watched_again_and_the_newest_state_broadcast_again() {
    let OpenChannel { node, daemon, payee, payer, channel, .. } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let mut locktime = 0;
    for _ in 0..2 {
        locktime = payer.json(&["pay", &channel, "7000"])["locktime"].as_u64().unwrap() as u32;
    }
    // The payer vanishes; the payee's newest commitment goes out once final, and is mined.
    node.mine_to(locktime);
    let txid = wait_for(Duration::from_secs(10), "commitment broadcast", || {
        node.mempool().first().copied()
    });
    node.mine(1);
    wait_for(Duration::from_secs(10), "closure recorded", || {
        (!payee.channel(&channel)["closing"].is_null()).then_some(())
    });

    // A reorganization back below its locktime: the commitment is out of the chain, and out of
    // the mempool (not final there). The payee forgets the close and watches the channel again.
    let client = node.chain.client();
    let at_locktime = bitcoincore_rpc::RpcApi::get_block_hash(&*client, locktime.into()).unwrap();
    bitcoincore_rpc::RpcApi::invalidate_block(&*client, &at_locktime).unwrap();
    assert_eq!(node.height(), locktime - 1);
    // Empty blocks, paying another address than the invalidated one (else it would be the same
    // block, refused as invalid).
    let elsewhere = common::p2wpkh_address(13);
    for _ in 0..2 {
        node.chain.mine_block_with(&[], &elsewhere).unwrap();
    }
    assert!(node.mempool().is_empty(), "{:?}", node.mempool());
    wait_for(Duration::from_secs(10), "closure forgotten", || {
        payee.channel(&channel)["closing"].is_null().then_some(())
    });
    assert!(daemon.log().contains("left the best chain"), "{}", daemon.log());

    // Final again on the new chain: the same newest commitment goes out again, and is recorded.
    let again = wait_for(Duration::from_secs(10), "commitment broadcast again", || {
        node.mempool().first().copied()
    });
    assert_eq!(again, txid);
    node.mine(1);
    let closing = wait_for(Duration::from_secs(10), "closure recorded again", || {
        let c = payee.channel(&channel);
        (!c["closing"].is_null()).then_some(c)
    });
    assert_eq!(closing["closing"]["txid"].as_str(), Some(&*txid.to_string()));
    assert_eq!(closing["closing"]["height"].as_u64(), Some(u64::from(locktime) + 2));
}

#[test]
fn a_restarted_daemon_replays_the_blocks_it_missed_closes_and_reorganizations_alike() {
    let OpenChannel { node, mut daemon, payee, payer, channel, .. } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let mut locktime = 0;
    for _ in 0..2 {
        locktime = payer.json(&["pay", &channel, "7000"])["locktime"].as_u64().unwrap() as u32;
    }
    // While the daemon is down, the payer's watch closes the channel with its checkpoint (the
    // payee's newest state too: both payments were checkpoints).
    daemon.kill9();
    let watch = Watch::start(&payer, &[]);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "watching");
    node.mine_to(locktime);
    let txid = watch.next(Duration::from_secs(10))["txid"].as_str().unwrap().to_owned();
    node.mine(1);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "closed");
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());

    // The daemon goes on from the blocks it stored, and finds the close in them.
    let mut daemon = Daemon::start(&payee, None, &[]);
    let closing = wait_for(Duration::from_secs(10), "closure found in the missed blocks", || {
        let c = payee.channel(&channel);
        (!c["closing"].is_null()).then_some(c)
    });
    assert_eq!(closing["closing"]["txid"].as_str(), Some(&*txid));
    daemon.kill9();

    // Down again, and a reorganization back below the locktime takes the close away (out of
    // the mempool too: not final there).
    let client = node.chain.client();
    let at_locktime = bitcoincore_rpc::RpcApi::get_block_hash(&*client, locktime.into()).unwrap();
    bitcoincore_rpc::RpcApi::invalidate_block(&*client, &at_locktime).unwrap();
    let elsewhere = common::p2wpkh_address(13);
    for _ in 0..2 {
        node.chain.mine_block_with(&[], &elsewhere).unwrap();
    }
    assert!(node.mempool().is_empty(), "{:?}", node.mempool());

    // At restart the stored blocks no longer match the node's: the daemon disconnects them,
    // forgets the close, and broadcasts its newest commitment again.
    let daemon = Daemon::start(&payee, None, &[]);
    let again = wait_for(Duration::from_secs(10), "commitment broadcast again", || {
        node.mempool().first().copied()
    });
    assert_eq!(again.to_string(), txid);
    assert!(payee.channel(&channel)["closing"].is_null());
    assert!(daemon.log().contains("left the best chain"), "{}", daemon.log());
    node.mine(1);
    let closing = wait_for(Duration::from_secs(10), "closure recorded again", || {
        let c = payee.channel(&channel);
        (!c["closing"].is_null()).then_some(c)
    });
    assert_eq!(closing["closing"]["height"].as_u64(), Some(u64::from(locktime) + 2));
}

#[test]
fn a_first_watch_of_one_channel_finds_a_close_made_while_no_watch_ran() {
    let OpenChannel { node, daemon, payer, channel, .. } = OpenChannel::new(300_000, &TERMS, &[]);
    let mut locktime = 0;
    for _ in 0..2 {
        locktime = payer.json(&["pay", &channel, "7000"])["locktime"].as_u64().unwrap() as u32;
    }
    // A full watch records the funding's height, and its own chain position, then stops.
    let watch = Watch::start(&payer, &[]);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "watching");
    node.mine(1);
    std::thread::sleep(Duration::from_millis(600));
    watch.terminate();
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());

    // The payee closes with its newest commitment while no watch runs.
    node.mine_to(locktime);
    wait_for(Duration::from_secs(10), "commitment broadcast", || node.mempool().first().copied());
    node.mine(1);
    drop(daemon);

    // A watch of that one channel has no blocks of its own to replay: it asks the node about
    // the funding once, and finds the close.
    let watch = Watch::start(&payer, &[&channel]);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "watching");
    let closed = watch.next(Duration::from_secs(10));
    assert_eq!(closed["event"], "closed");
    assert_eq!(closed["closing"]["height"].as_u64(), Some(u64::from(locktime) + 1));
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());
}

#[test]
fn the_payer_watch_broadcasts_its_newest_checkpoint_once_final() {
    let OpenChannel { node, mut daemon, payer, channel, open, .. } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let refund = open["refund_locktime"].as_u64().unwrap() as u32;
    // A checkpoint (5,000 sat is above 1% of the capacity) on rung 1, then a payment on rung 2.
    let first = payer.json(&["pay", &channel, "5000"]);
    assert_eq!(first["checkpoint"], true);
    assert_eq!(payer.json(&["pay", &channel, "1000"])["checkpoint"], false);
    let exit = first["locktime"].as_u64().unwrap() as u32;
    assert_eq!(exit, refund - 2);
    daemon.kill9();

    let watch = Watch::start(&payer, &[]);
    let watching = watch.next(Duration::from_secs(10));
    assert_eq!(watching["channels"][0]["checkpoint_locktime"], exit);
    node.mine_to(exit - 1);
    assert_eq!(watch.quiet_for(Duration::from_millis(600)), None);
    node.mine_to(exit);
    let sent = watch.next(Duration::from_secs(10));
    assert_eq!(
        (sent["event"].as_str(), sent["kind"].as_str(), sent["tip"].as_u64()),
        (Some("broadcast"), Some("checkpoint"), Some(u64::from(exit)))
    );
    let txid: Txid = sent["txid"].as_str().unwrap().parse().unwrap();
    assert_eq!(node.mempool(), vec![txid]);
    node.mine(1);
    let closed = watch.next(Duration::from_secs(10));
    let c: &Value = &closed["closing"];
    assert_eq!(
        (c["kind"].as_str(), c["rung"].as_u64(), c["payee_sat"].as_u64()),
        (Some("commitment"), Some(1), Some(5_000))
    );
    assert_eq!(c["height"].as_u64(), Some(u64::from(exit) + 1), "R is {refund}");
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());
}

#[test]
fn the_payer_watch_sees_its_close_reorganized_out_and_broadcasts_its_checkpoint_again() {
    let OpenChannel { node, mut daemon, payer, channel, .. } =
        OpenChannel::new(300_000, &TERMS, &[]);
    let exit = payer.json(&["pay", &channel, "5000"])["locktime"].as_u64().unwrap() as u32;
    daemon.kill9();
    let watch = Watch::start(&payer, &[]);
    watch.next(Duration::from_secs(10));
    node.mine_to(exit);
    let txid: Txid = watch.next(Duration::from_secs(10))["txid"].as_str().unwrap().parse().unwrap();
    node.mine(1);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "closed");
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());

    // A reorganization back below the checkpoint's locktime takes it out of the chain and the
    // mempool. The next `watch` sees it, forgets the close, and broadcasts the checkpoint again
    // once final.
    let client = node.chain.client();
    let at_exit = bitcoincore_rpc::RpcApi::get_block_hash(&*client, exit.into()).unwrap();
    bitcoincore_rpc::RpcApi::invalidate_block(&*client, &at_exit).unwrap();
    let elsewhere = common::p2wpkh_address(13);
    for _ in 0..2 {
        node.chain.mine_block_with(&[], &elsewhere).unwrap();
    }
    assert!(node.mempool().is_empty(), "{:?}", node.mempool());
    let watch = Watch::start(&payer, &[]);
    let reorged = watch.next(Duration::from_secs(10));
    assert_eq!(
        (reorged["event"].as_str(), reorged["txid"].as_str()),
        (Some("reorged"), Some(&*txid.to_string()))
    );
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "watching");
    let sent = watch.next(Duration::from_secs(10));
    assert_eq!(
        (sent["event"].as_str(), sent["txid"].as_str()),
        (Some("broadcast"), Some(&*txid.to_string()))
    );
    node.mine(1);
    let closed = watch.next(Duration::from_secs(10));
    assert_eq!(closed["closing"]["height"].as_u64(), Some(u64::from(exit) + 2));
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "done");
    assert!(watch.wait());
}

#[test]
fn the_payer_watch_broadcasts_the_refund_at_r_and_resumes_after_a_restart() {
    // No checkpoint: the refund is the payer's only way out.
    let terms = [&TERMS[..], &["--checkpoint-sat", "0"]].concat();
    let OpenChannel { node, mut daemon, payer, channel, open, .. } =
        OpenChannel::new(300_000, &terms, &[]);
    let refund = open["refund_locktime"].as_u64().unwrap() as u32;
    payer.json(&["pay", &channel, "5000"]);
    daemon.kill9();

    let watch = Watch::start(&payer, &[]);
    let watching = watch.next(Duration::from_secs(10));
    assert_eq!(watching["channels"][0]["channel_id"], channel.as_str());
    assert_eq!(watching["channels"][0]["refund_locktime"], refund);
    node.mine_to(refund - 1);
    assert_eq!(watch.quiet_for(Duration::from_millis(600)), None);
    // Stopped (SIGTERM: it says what it saw, nothing) and started again: it picks up from the
    // store.
    watch.terminate();
    let done = watch.next(Duration::from_secs(10));
    assert_eq!(
        (done["event"].as_str(), done["closed"].as_array().map(Vec::len)),
        (Some("done"), Some(0))
    );
    assert!(watch.wait());
    let watch = Watch::start(&payer, &[]);
    assert_eq!(watch.next(Duration::from_secs(10))["event"], "watching");
    node.mine_to(refund);
    let started = Instant::now();
    let sent = watch.next(Duration::from_secs(10));
    println!("refund broadcast {:?} after the block", started.elapsed());
    assert_eq!(
        (sent["event"].as_str(), sent["kind"].as_str()),
        (Some("broadcast"), Some("refund"))
    );
    assert_eq!(sent["tip"], refund);
    let txid: Txid = sent["txid"].as_str().unwrap().parse().unwrap();
    assert_eq!(node.mempool(), vec![txid]);
    node.mine(1);
    let closed = watch.next(Duration::from_secs(10));
    assert_eq!(closed["event"], "closed");
    let c: &Value = &closed["closing"];
    assert_eq!(
        (c["kind"].as_str(), c["txid"].as_str()),
        (Some("refund"), Some(&*txid.to_string()))
    );
    assert_eq!(c["payee_sat"], 0);
    assert!(c["payer_sat"].as_u64().unwrap() > 299_000);
    let done = watch.next(Duration::from_secs(10));
    assert_eq!(done["closed"][0]["channel_id"], channel.as_str());
    assert!(watch.wait());
    assert_eq!(payer.channel(&channel)["closing"]["kind"], "refund");
}
