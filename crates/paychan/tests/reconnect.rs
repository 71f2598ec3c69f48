//! Picking up after a lost message or a restart: each side repeats exactly what the other may
//! have missed, and a repeat changes nothing.

use paychan_testkit as common;

use bitcoin::Amount;
use common::{payer_config, route, Opening, Pair, TIP};
use paychan::channel::{ChannelError, PayeeAction, PayerAction};
use paychan::wire::{self, Message};

const CAPACITY: Amount = Amount::from_sat(500_000);

/// The payee's `reconcile` when it holds no payment.
fn no_payment(pair: &Pair) -> Message {
    Message::Reconcile(wire::Reconcile {
        channel_id: pair.payer.state().terms.channel_id,
        update: 0,
        paid_total_sat: 0,
        locktime: 0,
        checkpoint: false,
        since_checkpoint: 0,
        paid_since_checkpoint_sat: 0,
        payer_signature: None,
        checkpoint_update: 0,
        checkpoint_paid_sat: 0,
        checkpoint_locktime: 0,
        payee_signature: None,
    })
}

/// A reconnect of an open channel: the payer's `reestablish`, the payee's `channel_ready` and
/// `reconcile`, which the payer takes. Returns what the payer sends after them.
fn reconnect(pair: &mut Pair) -> Vec<Message> {
    let reestablish = route(pair.payer.reestablish().unwrap(), &mut pair.out);
    let [Message::Reestablish(_)] = &reestablish[..] else { panic!("{reestablish:?}") };
    let answers = route(pair.payee.handle_message(&reestablish[0], TIP).unwrap(), &mut pair.out);
    let [Message::ChannelReady(_), Message::Reconcile(_)] = &answers[..] else {
        panic!("{answers:?}")
    };
    let mut sent = Vec::new();
    for msg in &answers {
        sent.extend(route(pair.payer.handle_message(msg).unwrap(), &mut pair.out));
    }
    sent
}

#[test]
fn a_repeated_open_gets_the_same_accept_and_other_terms_are_refused() {
    let (mut o, accept) = Opening::proposed(payer_config(CAPACITY));
    let Message::AcceptChannel(a) = &accept else { panic!() };
    let open = Message::OpenChannel(wire::OpenChannel {
        channel_id: a.channel_id,
        network: o.payer.state().terms.network,
        capacity_sat: CAPACITY.to_sat(),
        feerate_sat_per_vb: o.payer.state().terms.feerate.to_sat_per_vb_ceil(),
        refund_locktime: o.payer.state().terms.ladder.refund(),
        step: o.payer.state().terms.ladder.step(),
        payer_key: o.payer.state().terms.payer_key,
        payer_address: payer_config(CAPACITY).payout.as_unchecked().clone(),
        checkpoint_every_payments: Some(1),
        checkpoint_every_sat: None,
    });
    let before = o.payee.state().clone();
    assert_eq!(
        o.payee.handle_message(&open, TIP).unwrap(),
        vec![PayeeAction::Send(accept.clone())]
    );
    assert_eq!(o.payee.state(), &before);
    let Message::OpenChannel(mut bigger) = open else { panic!() };
    bigger.capacity_sat += 1;
    let err = o.payee.handle_message(&Message::OpenChannel(bigger), TIP).unwrap_err();
    assert!(matches!(err, ChannelError::Unexpected { what: "open_channel", .. }), "{err}");
    assert_eq!(o.payee.state(), &before);
    route(o.payer.handle_message(&accept).unwrap(), &mut o.out);
}

#[test]
fn a_repeated_funding_created_gets_the_same_refund_signature() {
    let (Opening { mut payer, mut payee, mut out }, funding_tx, created) =
        Opening::funding_created(payer_config(CAPACITY));
    let refund_signed = route(payee.handle_message(&created, TIP).unwrap(), &mut out).remove(0);
    let signed = payee.state().clone();
    // The payer restarted before the refund signature reached it: it sends funding_created again.
    assert_eq!(payer.reestablish().unwrap(), vec![PayerAction::Send(created.clone())]);
    assert_eq!(
        payee.handle_message(&created, TIP).unwrap(),
        vec![PayeeAction::Send(refund_signed.clone())]
    );
    assert_eq!(payee.state(), &signed);
    // Another funding for the same channel is refused.
    let Message::FundingCreated(mut other) = created else { panic!() };
    other.funding_tx.lock_time = bitcoin::absolute::LockTime::from_consensus(1);
    assert!(payee.handle_message(&Message::FundingCreated(other), TIP).is_err());
    assert_eq!(payee.state(), &signed);
    route(payer.handle_message(&refund_signed).unwrap(), &mut out);
    assert_eq!(out.broadcasts, vec![funding_tx]);
}

#[test]
fn a_payer_waiting_for_ready_rebroadcasts_the_funding_and_asks_again() {
    let mut pair = Pair::funded(CAPACITY);
    let id = pair.payer.state().terms.channel_id;
    let reestablish = Message::Reestablish(wire::Reestablish { channel_id: id });
    assert_eq!(
        pair.payer.reestablish().unwrap(),
        vec![
            PayerAction::Broadcast(pair.funding_tx.clone()),
            PayerAction::Send(reestablish.clone())
        ]
    );
    // Not confirmed yet: the payee has no channel_ready to give, only that it holds no
    // payment, which changes nothing on the payer's side.
    let nothing = no_payment(&pair);
    assert_eq!(
        pair.payee.handle_message(&reestablish, TIP).unwrap(),
        vec![PayeeAction::Send(nothing.clone())]
    );
    let waiting = pair.payer.state().clone();
    assert_eq!(pair.payer.handle_message(&nothing).unwrap(), vec![]);
    assert_eq!(pair.payer.state(), &waiting);
    let (outpoint, txout) = pair.funding_output();
    let ready = route(pair.payee.funding_confirmed(outpoint, &txout, 1).unwrap(), &mut pair.out);
    // The first channel_ready was lost; the payee repeats it when asked.
    let again = pair.payee.handle_message(&reestablish, TIP).unwrap();
    assert_eq!(again, vec![PayeeAction::Send(ready[0].clone()), PayeeAction::Send(nothing)]);
    route(pair.payer.handle_message(&ready[0]).unwrap(), &mut pair.out);
    // A second copy changes nothing on the payer's side.
    let state = pair.payer.state().clone();
    assert_eq!(pair.payer.handle_message(&ready[0]).unwrap(), vec![]);
    assert_eq!(pair.payer.state(), &state);
    // Ready now: a reconnect only asks the payee where it stands; there is nothing to resend.
    assert_eq!(pair.payer.reestablish().unwrap(), vec![PayerAction::Send(reestablish)]);
}

#[test]
fn a_payment_in_flight_is_offered_again_and_counted_once() {
    let mut pair = Pair::open(CAPACITY);
    pair.pay(Amount::from_sat(1_000)).unwrap();
    let pay = route(pair.payer.pay(Amount::from_sat(500), pair.tip).unwrap(), &mut pair.out);
    // The pay was lost. Reconnected, the payer asks where the payee stands; the payee holds
    // payment 1, and the payer offers payment 2 again, the same bytes.
    let id = pair.payer.state().terms.channel_id;
    let reestablish = Message::Reestablish(wire::Reestablish { channel_id: id });
    assert_eq!(pair.payer.reestablish().unwrap(), vec![PayerAction::Send(reestablish.clone())]);
    assert_eq!(reconnect(&mut pair), pay);
    let first = pair.payee.handle_message(&pay[0], pair.tip).unwrap();
    let taken = pair.payee.state().clone();
    // The ack was lost too; the same payment offered again gets the same ack.
    let second = pair.payee.handle_message(&pay[0], pair.tip).unwrap();
    assert_eq!(second, vec![first[1].clone()]);
    assert_eq!(pair.payee.state(), &taken);
    // Before it arrives the connection breaks again: the payee's reconcile holds payment 2,
    // which acknowledges it; nothing is resent.
    assert_eq!(reconnect(&mut pair), vec![]);
    assert_eq!(pair.payer.paid(), Amount::from_sat(1_500));
    assert!(pair.payer.funded().unwrap().pending.is_empty());
    // The late ack is a repeat: it changes nothing.
    let acked = pair.payer.state().clone();
    let PayeeAction::Send(ack) = &second[0] else { panic!() };
    assert_eq!(pair.payer.handle_message(ack).unwrap(), vec![]);
    assert_eq!(pair.payer.state(), &acked);
    assert_eq!(pair.payee.state(), &taken);
    assert_eq!(pair.payer.paid(), Amount::from_sat(1_500));
    assert_eq!(pair.payee.paid(), Amount::from_sat(1_500));
}

#[test]
fn a_refused_payment_is_forgotten_and_the_update_number_reused() {
    let mut pair = Pair::open(CAPACITY);
    pair.pay(Amount::from_sat(1_000)).unwrap();
    route(pair.payer.pay(Amount::from_sat(500), pair.tip).unwrap(), &mut pair.out);
    let forgotten = pair.payer.abandon_pending().expect("a payment was in flight");
    assert_eq!((forgotten.number, forgotten.paid), (2, Amount::from_sat(1_500)));
    assert_eq!(pair.payer.abandon_pending(), None);
    assert_eq!(pair.payer.paid(), Amount::from_sat(1_000));
    pair.pay(Amount::from_sat(200)).unwrap();
    assert_eq!(pair.payee.funded().unwrap().payments(), 2);
    assert_eq!(pair.payee.paid(), Amount::from_sat(1_200));
}

#[test]
fn pipelined_payments_whose_acks_were_lost_are_resent_and_end_where_the_payee_is() {
    let mut pair = Pair::open(CAPACITY);
    let sat = Amount::from_sat;
    // Five payments signed and sent without waiting; the payee takes the first three, and
    // every ack is lost.
    let pays: Vec<Message> = (0..5)
        .map(|_| route(pair.payer.pay(sat(1000), TIP).unwrap(), &mut pair.out).remove(0))
        .collect();
    for pay in &pays[..3] {
        route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out);
    }
    assert_eq!((pair.payer.paid(), pair.payee.paid()), (sat(0), sat(3000)));
    // Reconnected: the payee's reconcile holds payment 3, which acknowledges the first three;
    // the payer resends the last two, in order, the same bytes.
    let resent = reconnect(&mut pair);
    assert_eq!(resent, pays[3..]);
    assert_eq!(pair.payer.paid(), sat(3000));
    let taken = pair.payee.state().clone();
    let mut acks = Vec::new();
    for pay in &resent {
        acks.extend(route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out));
    }
    // Both are new to the payee.
    let updates: Vec<u64> = acks
        .iter()
        .map(|m| match m {
            Message::PayAck(a) => a.update,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(updates, vec![4, 5]);
    assert_ne!(pair.payee.state(), &taken);
    for ack in &acks {
        route(pair.payer.handle_message(ack).unwrap(), &mut pair.out);
    }
    assert_eq!((pair.payer.paid(), pair.payee.paid()), (sat(5000), sat(5000)));
    assert!(pair.payer.funded().unwrap().pending.is_empty());
    // And they settle on it.
    let settlement = pair.close();
    assert!(settlement.output.iter().any(|o| o.value == sat(5000)));
}
