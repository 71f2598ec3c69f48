//! Picking up after a lost message or a restart: each side repeats exactly what the other may
//! have missed, and a repeat changes nothing.

use paychan_testkit as common;

use bitcoin::Amount;
use common::{payer_config, route, Opening, Pair, TIP};
use paychan::channel::{ChannelError, PayeeAction, PayerAction};
use paychan::wire::{self, Message};

const CAPACITY: Amount = Amount::from_sat(500_000);

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
    // Not confirmed yet: the payee has nothing to say.
    assert_eq!(pair.payee.handle_message(&reestablish, TIP).unwrap(), vec![]);
    let (outpoint, txout) = pair.funding_output();
    let ready = route(pair.payee.funding_confirmed(outpoint, &txout, 1).unwrap(), &mut pair.out);
    // The first channel_ready was lost; the payee repeats it when asked.
    let again = pair.payee.handle_message(&reestablish, TIP).unwrap();
    assert_eq!(again, vec![PayeeAction::Send(ready[0].clone())]);
    route(pair.payer.handle_message(&ready[0]).unwrap(), &mut pair.out);
    // A second copy changes nothing on the payer's side.
    let state = pair.payer.state().clone();
    assert_eq!(pair.payer.handle_message(&ready[0]).unwrap(), vec![]);
    assert_eq!(pair.payer.state(), &state);
    assert_eq!(pair.payer.reestablish().unwrap(), vec![]);
}

#[test]
fn a_payment_in_flight_is_offered_again_and_counted_once() {
    let mut pair = Pair::open(CAPACITY);
    pair.pay(Amount::from_sat(1_000)).unwrap();
    let pay = route(pair.payer.pay(Amount::from_sat(500), pair.tip).unwrap(), &mut pair.out);
    assert_eq!(pair.payer.reestablish().unwrap(), vec![PayerAction::Send(pay[0].clone())]);
    let first = pair.payee.handle_message(&pay[0], pair.tip).unwrap();
    let taken = pair.payee.state().clone();
    // The ack was lost; the payer offers the same payment again and gets the same ack.
    let second = pair.payee.handle_message(&pay[0], pair.tip).unwrap();
    assert_eq!(second, vec![first[1].clone()]);
    assert_eq!(pair.payee.state(), &taken);
    let PayeeAction::Send(ack) = &second[0] else { panic!() };
    route(pair.payer.handle_message(ack).unwrap(), &mut pair.out);
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
    // Reconnected: the payer resends all five, in order.
    let resent = route(pair.payer.reestablish().unwrap(), &mut pair.out);
    assert_eq!(resent, pays);
    let taken = pair.payee.state().clone();
    let mut acks = Vec::new();
    for pay in &resent {
        acks.extend(route(pair.payee.handle_message(pay, TIP).unwrap(), &mut pair.out));
    }
    // The two older repeats got the newest ack (update 3); the third is an exact repeat; the
    // last two are new.
    let updates: Vec<u64> = acks
        .iter()
        .map(|m| match m {
            Message::PayAck(a) => a.update,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(updates, vec![3, 3, 3, 4, 5]);
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
