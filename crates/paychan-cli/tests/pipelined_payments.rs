//! Pipelined payments (`PayerClient::pay_pipelined`) against the real daemon (`serve`) on a
//! regtest node: hundreds of payments in flight in batches arrive whole, and a `kill -9` of the
//! daemon in the middle of a stream leaves both sides agreeing once the payer reconnects.

mod common;

use bitcoin::Amount;
use bitcoincore_rpc::Auth;
use common::cli::{Daemon, OpenChannel};
use paychan::wire::ChannelId;
use paychan_bitcoind::RpcChain;
use paychan_node::client::{ClientError, ClientTimeouts, PayerClient, Pipelined};
use paychan_node::datadir::DataDir;

const TERMS: [&str; 6] = ["--lifetime", "2000", "--step", "1", "--feerate", "2"];
const PAYMENT: Amount = Amount::from_sat(500);

fn paid(party: &common::cli::Party, channel: &str) -> u64 {
    party.channel(channel)["paid_total_sat"].as_u64().unwrap()
}

#[test]
fn pipelined_payments_arrive_whole_and_survive_a_payee_crash() {
    let OpenChannel { node, mut daemon, payee, payer, channel, .. } =
        OpenChannel::new(2_000_000, &TERMS, &[]);
    let id: ChannelId = channel.parse().unwrap();
    let chain = RpcChain::new(&node.url, Auth::CookieFile(node.cookie.clone())).unwrap();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // 600 payments, up to 64 in flight, saved and sent 16 at a time.
    let mut events = Vec::new();
    rt.block_on(async {
        let mut datadir = DataDir::open(payer.datadir(), bitcoin::Network::Regtest).unwrap();
        let mut client =
            PayerClient::resume(datadir.parts(), &chain, id, ClientTimeouts::default())
                .await
                .unwrap();
        client.pay_pipelined(&[PAYMENT; 600], 64, 16, |e| events.push(e)).await.unwrap();
        assert_eq!(client.payer().paid(), PAYMENT * 600);
        assert!(client.payer().funded().unwrap().pending.is_empty());
    });
    assert_eq!((paid(&payer, &channel), paid(&payee, &channel)), (300_000, 300_000));
    assert_eq!(payee.channel(&channel)["payments"], 600);
    // Batches really overlapped: a second batch left before the first was acknowledged.
    let first_ack = events.iter().position(|e| matches!(e, Pipelined::Acknowledged { .. }));
    let sent_before = events[..first_ack.unwrap()].len();
    assert!(sent_before >= 2, "{events:?}");

    // The daemon is killed while payments are in flight.
    let killed = rt.block_on(async {
        let mut datadir = DataDir::open(payer.datadir(), bitcoin::Network::Regtest).unwrap();
        let mut client =
            PayerClient::resume(datadir.parts(), &chain, id, ClientTimeouts::default())
                .await
                .unwrap();
        let mut acked = 0;
        // Killed from inside the stream, once 100 of these are acknowledged.
        let result = client
            .pay_pipelined(&[PAYMENT; 1000], 64, 16, |e| {
                if let Pipelined::Acknowledged { up_to } = e {
                    if acked < 700 && up_to >= 700 {
                        daemon.kill9();
                    }
                    acked = up_to;
                }
            })
            .await;
        (result, acked)
    });
    let (result, acked) = killed;
    assert!(
        matches!(result, Err(ClientError::Connection(_) | ClientError::InFlight { .. })),
        "{result:?}"
    );
    assert!(acked > 600, "nothing was acknowledged before the kill: {acked}");
    let daemon = Daemon::start(&payee, Some(&daemon.listen), &[]);
    // The next command resends what was in flight; then both sides hold the same total, at least
    // everything acknowledged before the kill, plus this payment.
    let after = payer.json(&["pay", &channel, "500"]);
    let total = after["paid_total_sat"].as_u64().unwrap();
    assert_eq!(paid(&payee, &channel), total);
    assert!(total >= (acked + 1) * 500, "{total} < {}", (acked + 1) * 500);
    println!("acknowledged before the kill: update {acked}; total after: {total} sat");
    drop(daemon);
    drop(node);
}
