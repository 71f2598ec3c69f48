//! Drives the payee's state machine with a sequence of operations read from the input: peer bytes
//! decoded as messages, honest payments (between checkpoints and checkpoints, sent at once or
//! pipelined, their answers delivered or lost) and closes by the real payer, honest messages with
//! one field changed, replays, the tip moving, the funding's confirmations and reconnects, on a
//! channel opened with one of four checkpoint policies.
//!
//! The input, byte by byte (reads past the end give zeros):
//!
//! - byte 0: where the channel starts, `% 4`: 0 awaiting funding, 1 funded but unconfirmed, else
//!   open; and `>> 2 & 3` its checkpoint policy (see [`paychan_fuzz::policies`]): 0 the default
//!   (every 1000 sat), 1 every payment, 2 only when the payer asks, 3 every 3 payments or
//!   2500 sat;
//! - then operations until the input ends, each an opcode byte (taken modulo 8) and its operands:
//!   - 0 `len: u16 LE, bytes[len]`: the bytes decoded with `Message::decode`, given to the payee;
//!   - 1 `word: u16 LE`: the payer pays `word & 0x1fff` sat (0 is refused by the payer), a
//!     checkpoint whatever the policy (`pay_checkpoint`) if bit 13 is set. With bit 15 set its
//!     `pay` is held back (the payer pipelines); otherwise the held-back `pay`s and this one go
//!     to the payee as one burst, and the answers come back as the daemon sends them (every
//!     checkpoint's ack and the newest), then the refusal if one was refused. With bit 14 set
//!     the connection drops once the payee has taken this `pay`: the burst's answers and the
//!     rest of it are lost, and the payer's next `pay`s wait for a reconnect (6);
//!   - 2 `base: u8, field: u8, value: u64 LE`: an honest message with one field changed (see
//!     [`Run::mutated`]) goes to the payee;
//!   - 3 `mode: u8, value: u16 LE`: the tip moves (see [`Run::move_tip`]);
//!   - 4: the payer closes; its `closing_signed` goes to the payee and the `closing_ack` back;
//!   - 5 `conf: u8`: the funding has `conf % 4` confirmations (at another outpoint if `conf`'s
//!     top bit is set);
//!   - 6: the payer reconnects: the `pay`s held back are lost with the old connection. The payer
//!     sends `funding_created` again or, once funded, only `reestablish`; the payee answers
//!     `channel_ready` (once ready) and `reconcile` (the newest payment it holds), and the
//!     payer, on taking the `reconcile`, resends what it still has in flight after it (its
//!     `pay`s as one burst, or its `closing_signed`);
//!   - 7 `index: u8`: a message the payer sent before (`index` counted back from the newest) is
//!     delivered again, as it was.
//!
//! With `PAYEE_TRACE` set in the environment, each operation's outcome is printed (to read a
//! crash input).
//!
//! Checked after every step: nothing panics; a call that fails leaves the payee's (and the
//! payer's) state exactly as it was; the paid total never decreases and never exceeds the
//! capacity; a state change is persisted first, and the run goes on from the payee's state
//! restored from its JSON (the payer's is restored at the end of the input); a message whose signature is not the payer's over the commitment or settlement it
//! proposes changes nothing; a settled payee never changes again; while the payee has taken
//! nothing the payer did not send, every honest message is taken (a payment only loses to a tip
//! that moved since it was signed) and both agree on the paid total once the answers are in.
//! And for checkpoints:
//! - an ack is for the payee's newest payment or its newest checkpoint, and carries a signature
//!   exactly when that payment is a checkpoint the payee took; the signature verifies against
//!   the rebuilt commitment, and the payer takes it;
//! - the payee's `newest_commitment()` always rebuilds the newest payment's commitment, at its
//!   locktime, paying the newest total (nothing below the dust limit), with both signatures;
//! - the payee's newest payment sits on rung `c + 1` after `c` checkpoints (or is the newest
//!   checkpoint), taken more than its margin above the tip; its locktime is at least `step`
//!   below every other fully signed state the payer holds (its newest checkpoint, unless it is
//!   that same payment, and the refund at `R`), and so once the payer's way out is final the
//!   payee's newest state has been for `step` blocks;
//! - the payer signs what its policy says, on the rung the ladder says;
//! - a `reconcile` carries the payee's newest payment as stored, with the payer's valid
//!   signature over its commitment, and its newest checkpoint with the payee's valid signature;
//!   in sync, the payer takes it and both then stand on the same payment, total and checkpoint.
#![no_main]

use std::collections::VecDeque;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::hashes::Hash;
use paychan::bitcoin::sighash::SegwitV0Sighash;
use paychan::bitcoin::{absolute, ecdsa, Amount, OutPoint, PublicKey, Transaction};
use paychan::channel::{
    ChannelError, CheckpointPolicy, FundedChannel, Payee, PayeeAction, PayeeState, Payer,
    PayerAction, PayerStage, PayerState, Payment,
};
use paychan::keys::{parse_signature, ChannelSigner};
use paychan::wire::{Message, OpenChannel, PayAck, RawSignature, Reconcile};
use paychan_fuzz::{
    payee_config, policies, sent, signer, Input, Opened, CAPACITY, CHANNEL_ID, MARGIN, REFUND,
    STEP, TIP,
};

/// What every input starts from, built once.
struct Fixture {
    /// One channel per checkpoint policy, in the order of [`policies`].
    opened: Vec<Opened>,
    payer_signer: ChannelSigner,
    payee_signer: ChannelSigner,
    other_signer: ChannelSigner,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| Fixture {
        opened: policies().into_iter().map(Opened::with_checkpoints).collect(),
        payer_signer: signer(1),
        payee_signer: signer(2),
        other_signer: signer(9),
    });
    let mut input = Input(data);
    let first = input.u8();
    let opened = &fixture.opened[usize::from(first >> 2 & 3)];
    let start = match first % 4 {
        0 => &opened.awaiting_funding,
        1 => &opened.funded,
        _ => &opened.open,
    };
    let trace = std::env::var_os("PAYEE_TRACE").is_some();
    let mut run = Run {
        fixture,
        opened,
        payer: start.payer.clone(),
        payee: start.payee.clone(),
        tip: TIP,
        in_sync: true,
        connected: true,
        history: Vec::new(),
        held: Vec::new(),
        signed_at: Vec::new(),
        paid: start.payee.paid(),
    };
    if trace {
        eprintln!(
            "start: {}, policy {:?}",
            start.payee.state().stage.name(),
            opened_policy(opened)
        );
    }
    while !input.0.is_empty() {
        let op = input.0[0] % 8;
        run.step(&mut input);
        run.check_ladder();
        if trace {
            let (payee, payer) = (run.payee.state().stage.name(), run.payer.state().stage.name());
            let paid = (run.payer.paid(), run.payee.paid());
            let payee_f = run.payee.funded();
            let payer_f = run.payer.funded();
            eprintln!(
                "op {op}: payer {payer}, payee {payee}, paid {paid:?}, payments {:?}, \
                 checkpoints {:?}, pending {:?}, held {}, tip {}, in sync {}, connected {}",
                (payer_f.map(|f| f.funded.payments()), payee_f.map(FundedChannel::payments)),
                (payer_f.map(|f| f.funded.checkpoints()), payee_f.map(FundedChannel::checkpoints)),
                payer_f.map(|f| f.pending.iter().map(|p| p.number).collect::<Vec<_>>()),
                run.held.len(),
                run.tip,
                run.in_sync,
                run.connected,
            );
        }
    }
    run.check_newest_commitment();
    run.check_payer_restores();
});

fn opened_policy(opened: &Opened) -> CheckpointPolicy {
    opened.open.payer.state().terms.checkpoints
}

/// A `pay` signed and not yet sent, and whether the connection drops once the payee took it.
struct Held {
    pay: Message,
    drop_after: bool,
}

/// One input's run: both parties, the tip, and what the checks remember.
struct Run<'a> {
    fixture: &'a Fixture,
    /// The channel the run started from.
    opened: &'a Opened,
    payer: Payer,
    payee: Payee,
    tip: u32,
    /// Whether the payee has taken only what the real payer sent. Once it has taken anything
    /// else (a mutated funding, a payment the fuzzer signed with the payer's key, a payment
    /// whose `checkpoint` flag was flipped) the two may disagree and honest messages may be
    /// refused.
    in_sync: bool,
    /// Whether the payer's connection is up. After it drops (a `pay` with bit 14) the payer
    /// holds its `pay`s back until it reconnects.
    connected: bool,
    /// The messages the real payer sent, for replays and as bases of mutations (the last 64).
    history: Vec<Message>,
    /// Payments the payer signed and has not sent yet (it pipelines).
    held: Vec<Held>,
    /// The tip at which each payment in flight was first signed, by number.
    signed_at: Vec<(u64, u32)>,
    /// The highest paid total seen.
    paid: Amount,
}

impl Run<'_> {
    fn step(&mut self, input: &mut Input) {
        match input.u8() % 8 {
            0 => {
                let len = usize::from(input.u16());
                if let Ok(msg) = Message::decode(input.bytes(len)) {
                    self.deliver_foreign(&msg);
                }
            }
            1 => {
                let word = input.u16();
                let amount = Amount::from_sat(u64::from(word & 0x1fff));
                let (checkpoint, drop_after, hold) =
                    (word & 0x2000 != 0, word & 0x4000 != 0, word & 0x8000 != 0);
                self.honest_pay(amount, checkpoint, hold, drop_after);
            }
            2 => {
                let (base, field, value) = (input.u8(), input.u8(), input.u64());
                if let Some(msg) = self.mutated(base, field, value) {
                    self.deliver_foreign(&msg);
                }
            }
            3 => {
                let (mode, value) = (input.u8(), input.u16());
                self.move_tip(mode, value);
            }
            4 => self.honest_close(),
            5 => {
                let conf = input.u8();
                self.funding_confirmed(conf);
            }
            6 => self.reestablish(),
            _ => {
                let index = usize::from(input.u8());
                if !self.history.is_empty() {
                    let msg =
                        self.history[self.history.len() - 1 - index % self.history.len()].clone();
                    self.replay(&msg);
                }
            }
        }
    }

    /// Gives `msg` to the payee and checks what came of it.
    fn deliver(&mut self, msg: &Message) -> Result<Vec<PayeeAction>, ChannelError> {
        let before = self.payee.state().clone();
        let result = self.payee.handle_message(msg, self.tip);
        self.check_call(&before, &result, msg);
        if let (Ok(_), Message::OpenChannel(open)) = (&result, msg) {
            let policy = checkpoint_policy(open);
            assert_eq!(policy, Some(self.payee.state().terms.checkpoints), "{open:?} repeated");
        }
        result
    }

    /// Delivers a message the real payer did not send (or not now); what the payee answers goes
    /// back to the payer, which may refuse it. A `pay` or `closing_signed` whose signature is not
    /// the payer's over the transaction it proposes must change nothing.
    fn deliver_foreign(&mut self, msg: &Message) {
        let forged =
            matches!(msg, Message::Pay(_) | Message::ClosingSigned(_)) && !self.payer_signed(msg);
        let before = self.payee.state().clone();
        let result = self.deliver(msg);
        if self.payee.state() != &before {
            assert!(!forged, "a forged {msg:?} changed the payee's state");
            self.in_sync = false;
        }
        if let (Ok(actions), true) = (result, self.connected) {
            for answer in sent(actions) {
                let _ = self.answer_payer(&answer);
            }
        }
    }

    /// Delivers again a message the payer sent before: a `pay` still in flight whose payment
    /// before it the payee has is delivered as the payer would send it (late); anything else as
    /// a foreign message.
    fn replay(&mut self, msg: &Message) {
        if let Message::Pay(p) = msg {
            let in_flight = self.connected
                && p.update <= self.payee_payments() + 1
                && self
                    .payer
                    .resend_pending()
                    .expect("rebuilds")
                    .contains(&PayerAction::Send(msg.clone()));
            if in_flight {
                self.burst(vec![Held { pay: msg.clone(), drop_after: false }]);
                return;
            }
        }
        self.deliver_foreign(msg);
    }

    /// Checks a call on the payee that started from `before` and returned `result`. A changed
    /// state is restored from its JSON, and the run goes on with the restored payee.
    fn check_call(
        &mut self,
        before: &PayeeState,
        result: &Result<Vec<PayeeAction>, ChannelError>,
        what: &dyn std::fmt::Debug,
    ) {
        let after = self.payee.state().clone();
        match result {
            Err(e) => assert_eq!(&after, before, "{what:?} refused ({e}) but changed the state"),
            Ok(actions) => {
                if &after != before {
                    assert!(
                        settlement(before).is_none(),
                        "{what:?} changed a settled payee: {before:?} -> {after:?}"
                    );
                    assert_eq!(
                        actions.first(),
                        Some(&PayeeAction::Persist),
                        "{what:?}: {actions:?}"
                    );
                    self.payee = restored(&self.fixture.payee_signer, &after);
                    self.check_taken(before, what);
                    self.check_newest_commitment();
                }
                for action in actions {
                    if let PayeeAction::Send(Message::PayAck(ack)) = action {
                        self.check_ack(ack);
                    }
                }
            }
        }
        let paid = self.payee.paid();
        assert!(paid >= self.paid, "{what:?}: paid total fell from {} to {paid}", self.paid);
        assert!(paid <= CAPACITY, "{what:?}: paid total {paid} above the capacity");
        self.paid = paid;
    }

    /// Checks a payment the payee just took (if `before` had an older newest): more than the
    /// margin above the tip, and a checkpoint exactly when the payee countersigned it.
    fn check_taken(&self, before: &PayeeState, what: &dyn std::fmt::Debug) {
        let Some(f) = self.payee.funded() else { return };
        let old = funded(before).map_or(0, FundedChannel::payments);
        let Some(p) = f.newest.as_ref().filter(|p| p.number != old) else { return };
        assert_eq!(p.number, old + 1, "{what:?}: payment {} after {old}", p.number);
        assert!(
            u64::from(p.locktime) > u64::from(self.tip) + u64::from(MARGIN),
            "{what:?}: payment at locktime {} taken at tip {}",
            p.locktime,
            self.tip
        );
        let countersigned = f.checkpoint.as_ref().is_some_and(|c| c.number == p.number);
        assert_eq!(p.checkpoint, countersigned, "{what:?}: {p:?} / {:?}", f.checkpoint);
    }

    /// Checks that `ack` is for the payee's newest payment or its newest checkpoint, and
    /// carries the payee's valid signature exactly when that payment is a checkpoint.
    fn check_ack(&self, ack: &PayAck) {
        assert_eq!(ack.channel_id, CHANNEL_ID);
        let f = self.payee.funded().expect("an ack comes from a funded channel");
        let newest = f.newest.as_ref().expect("an ack follows a payment");
        let checkpoint = f.checkpoint.as_ref().filter(|c| c.number == ack.update);
        if ack.update != newest.number {
            assert!(checkpoint.is_some(), "{ack:?}: neither the newest payment nor a checkpoint");
        }
        let Some(c) = checkpoint else {
            assert_eq!(ack.signature, None, "{ack:?}: a signature on a payment, not a checkpoint");
            return;
        };
        let raw = ack.signature.as_ref().expect("a checkpoint's ack carries the payee's signature");
        assert_eq!(raw, &RawSignature::from(c.payee_sig));
        let builder = f.channel.builder();
        let tx = builder.commitment(c.paid, c.locktime).expect("a stored checkpoint");
        assert_eq!(tx.lock_time.to_consensus_u32(), c.locktime);
        let sighash = builder.sighash(&tx).expect("a channel transaction");
        let sig = parse_signature(&raw.0).expect("the payee's own signature parses");
        self.verify(sighash, &sig, &self.fixture.payee_signer.public_key())
            .expect("the checkpoint's payee signature verifies");
        self.verify(sighash, &c.payer_sig, &self.fixture.payer_signer.public_key())
            .expect("the checkpoint's payer signature verifies");
    }

    /// Checks that the payee's newest commitment rebuilds, at the newest payment's locktime,
    /// paying its total (or nothing below the dust limit), with both parties' valid signatures.
    fn check_newest_commitment(&self) {
        let newest = self.payee.newest_commitment().expect("the newest commitment rebuilds");
        let Some(f) = self.payee.funded() else {
            assert_eq!(newest, None);
            return;
        };
        let Some(p) = f.newest.as_ref() else {
            assert_eq!(newest, None, "a commitment before any payment");
            return;
        };
        let tx = newest.expect("the newest payment's commitment");
        let builder = f.channel.builder();
        let unsigned = builder.commitment(p.paid, p.locktime).expect("rebuilds");
        assert_eq!(strip(&tx), unsigned, "the newest commitment is that of {p:?}");
        assert_eq!(tx.lock_time.to_consensus_u32(), p.locktime);
        let payee_script = &self.payee.state().payee_script;
        let to_payee: Amount =
            tx.output.iter().filter(|o| &o.script_pubkey == payee_script).map(|o| o.value).sum();
        let dust = payee_script.minimal_non_dust();
        let expected = if p.paid < dust { Amount::ZERO } else { p.paid };
        assert_eq!(to_payee, expected, "the newest commitment pays {to_payee}, not {}", p.paid);
        let witness: Vec<&[u8]> = tx.input[0].witness.iter().collect();
        assert_eq!(witness.last().copied(), Some(builder.funding().witness_script().as_bytes()));
        let sighash = builder.sighash(&unsigned).expect("a channel transaction");
        for key in [&self.fixture.payer_signer, &self.fixture.payee_signer] {
            let signed = witness.iter().any(|w| {
                parse_signature(w)
                    .is_ok_and(|s| self.verify(sighash, &s, &key.public_key()).is_ok())
            });
            assert!(
                signed,
                "the newest commitment lacks {:?}'s signature: {tx:?}",
                key.public_key()
            );
        }
    }

    /// Checks where the payee's newest payment sits on the ladder, against its own newest
    /// checkpoint and against every fully signed state the payer holds.
    fn check_ladder(&self) {
        let Some(f) = self.payee.funded() else { return };
        let (refund, step) = (u64::from(REFUND), u64::from(STEP));
        let payer_checkpoint = self.payer.funded().and_then(|f| f.funded.checkpoint.as_ref());
        let Some(p) = f.newest.as_ref() else {
            assert_eq!(f.checkpoint, None, "a checkpoint without a payment");
            assert_eq!(payer_checkpoint, None, "the payer holds a checkpoint the payee lacks");
            return;
        };
        let locktime = u64::from(p.locktime);
        assert!(locktime + step <= refund, "{p:?}: less than a step below R = {refund}");
        match &f.checkpoint {
            Some(c) if c.number == p.number => {
                assert!(p.checkpoint, "{p:?} is the checkpoint {c:?}");
                assert_eq!((c.paid, c.locktime), (p.paid, p.locktime), "{p:?} / {c:?}");
            }
            Some(c) => {
                assert!(!p.checkpoint && c.number < p.number, "{p:?} after {c:?}");
                assert_eq!(locktime + step, u64::from(c.locktime), "{p:?} after {c:?}");
            }
            None => {
                assert!(!p.checkpoint, "{p:?} is a checkpoint, yet none is stored");
                assert_eq!(locktime + step, refund, "{p:?} before any checkpoint");
            }
        }
        if let Some(pc) = payer_checkpoint {
            let c = f.checkpoint.as_ref().expect("the payer's checkpoint was the payee's");
            assert!(pc.number <= c.number, "the payer's {pc:?} is newer than the payee's {c:?}");
            if pc.number == p.number {
                assert_eq!((pc.paid, pc.locktime), (p.paid, p.locktime), "{pc:?} / {p:?}");
            } else {
                assert!(
                    locktime + step <= u64::from(pc.locktime),
                    "the payee's newest {p:?} is less than a step below the payer's {pc:?}"
                );
            }
        }
    }

    /// The payer pays `amount`, a checkpoint if `checkpoint` or its policy says so. Held back
    /// (or while the connection is down), its `pay` waits (the payer pipelines); otherwise the
    /// payments held back and this one go to the payee as one burst.
    fn honest_pay(&mut self, amount: Amount, checkpoint: bool, hold: bool, drop_after: bool) {
        let before = self.payer.state().clone();
        let previous = self
            .payer
            .funded()
            .and_then(|f| f.pending.back().or(f.funded.newest.as_ref()).copied());
        let result = if checkpoint {
            self.payer.pay_checkpoint(amount, self.tip)
        } else {
            self.payer.pay(amount, self.tip)
        };
        self.check_payer_call(&before, &result, &"pay");
        let Ok(actions) = result else { return };
        let msgs = sent(actions);
        let [pay @ Message::Pay(p)] = &msgs[..] else { panic!("pay sends one pay: {msgs:?}") };
        // Signed as the policy says, on the rung the ladder says.
        let f = self.payer.funded().expect("paying");
        let signed = *f.pending.back().expect("just signed");
        assert_eq!((signed.number, signed.paid.to_sat()), (p.update, p.paid_total_sat));
        assert_eq!((signed.locktime, signed.checkpoint), (p.locktime, p.checkpoint));
        let (expected_lock, since) = match previous {
            None => (REFUND - STEP, (1, amount)),
            Some(prev) if prev.checkpoint => (prev.locktime - STEP, (1, amount)),
            Some(prev) => {
                (prev.locktime, (prev.since_checkpoint + 1, prev.paid_since_checkpoint + amount))
            }
        };
        assert_eq!(p.locktime, expected_lock, "{p:?} after {previous:?}");
        assert_eq!((signed.since_checkpoint, signed.paid_since_checkpoint), since, "{signed:?}");
        let policy = self.payer.state().terms.checkpoints;
        let due = policy.due(since.0, since.1);
        assert_eq!(p.checkpoint, checkpoint || due, "{p:?} under {policy:?}");
        assert_eq!(p.paid_total_sat, previous.map_or(0, |p| p.paid.to_sat()) + amount.to_sat());

        self.signed_at.retain(|(n, _)| *n < p.update);
        self.signed_at.push((p.update, self.tip));
        let pay = pay.clone();
        self.remember(&pay);
        self.held.push(Held { pay, drop_after });
        if !hold && self.connected {
            let burst = std::mem::take(&mut self.held);
            self.burst(burst);
        }
    }

    /// Delivers honest `pay`s to the payee in order, as one burst, until one is refused or the
    /// connection drops. The answers then come back as the daemon sends them: every
    /// checkpoint's ack and the newest ack, then the refusal (the payer forgets what it has in
    /// flight).
    fn burst(&mut self, pays: Vec<Held>) {
        let mut answers = Vec::new();
        let mut refused = false;
        for held in pays {
            let Message::Pay(p) = &held.pay else { unreachable!("only pays are held") };
            let signed_at = self.signed_at.iter().find(|(n, _)| *n == p.update).map(|(_, t)| *t);
            match self.deliver(&held.pay) {
                Ok(actions) => {
                    let acks = sent(actions);
                    assert!(
                        acks.iter().any(|m| matches!(m, Message::PayAck(_))),
                        "a payment taken is acknowledged: {acks:?}"
                    );
                    answers.extend(acks);
                    if held.drop_after {
                        // Lost with the connection, and so is the rest of the burst.
                        self.connected = false;
                        return;
                    }
                }
                Err(e) => {
                    // Signed at an earlier tip, a payment may have come too close to it since.
                    let late = signed_at.is_some_and(|t| t != self.tip)
                        && matches!(e, ChannelError::Ladder(_));
                    assert!(!self.in_sync || late, "an honest {:?} refused: {e}", held.pay);
                    refused = true;
                    break;
                }
            }
        }
        let mut taken_all = true;
        for answer in newest_acks(answers) {
            let taken = self.answer_payer(&answer);
            if self.in_sync {
                taken.unwrap_or_else(|e| panic!("the payer refused the payee's {answer:?}: {e}"));
            } else {
                taken_all &= taken.is_ok();
            }
        }
        if refused || !taken_all {
            // The payee's `error`, or the payer's own refusal of what came back.
            self.payer.abandon_pending();
            self.held.clear();
        }
        if self.in_sync && !refused {
            assert_eq!(self.payer.paid(), self.payee.paid(), "the acks are in");
        }
    }

    /// Gives the payee's `msg` to the payer and checks what came of it.
    fn answer_payer(&mut self, msg: &Message) -> Result<Vec<PayerAction>, ChannelError> {
        let before = self.payer.state().clone();
        let result = self.payer.handle_message(msg);
        self.check_payer_call(&before, &result, msg);
        result
    }

    /// Checks a call on the payer as [`Run::check_call`] does on the payee: an error changes
    /// nothing, a change is persisted first and restores from its JSON.
    fn check_payer_call(
        &mut self,
        before: &PayerState,
        result: &Result<Vec<PayerAction>, ChannelError>,
        what: &dyn std::fmt::Debug,
    ) {
        let after = self.payer.state();
        match result {
            Err(e) => assert_eq!(after, before, "payer: {what:?} refused ({e}) but changed"),
            Ok(actions) if after != before => {
                // Its JSON is checked at the end of the input (`check_payer_restores`): each
                // change would cost the whole queue of payments in flight.
                assert_eq!(
                    actions.first(),
                    Some(&PayerAction::Persist),
                    "payer: {what:?}: {actions:?}"
                )
            }
            Ok(_) => {}
        }
    }

    /// Checks that the payer's persisted state survives JSON and restores a payer, and goes on
    /// with that payer.
    fn check_payer_restores(&mut self) {
        let state = self.payer.state();
        let json = serde_json::to_vec(state).expect("the payer's state serializes");
        let back: PayerState = serde_json::from_slice(&json).expect("and deserializes");
        assert_eq!(&back, state);
        self.payer = Payer::restore(self.fixture.payer_signer.clone(), back).expect("and restores");
    }

    /// The payer closes; the payee's answer goes back to it.
    fn honest_close(&mut self) {
        if !self.connected {
            return;
        }
        let before = self.payer.state().clone();
        let result = self.payer.close();
        self.check_payer_call(&before, &result, &"close");
        let Ok(actions) = result else { return };
        let msgs = sent(actions);
        let [closing] = &msgs[..] else { panic!("close sends one message") };
        self.close_with(closing);
    }

    fn close_with(&mut self, closing: &Message) {
        self.remember(closing);
        match self.deliver(closing) {
            Ok(actions) => {
                assert!(
                    actions.iter().any(|a| matches!(a, PayeeAction::Broadcast(_))),
                    "a settlement taken is broadcast: {actions:?}"
                );
                for reply in sent(actions) {
                    let taken = self.answer_payer(&reply);
                    assert!(!self.in_sync || taken.is_ok(), "{reply:?}: {taken:?}");
                }
            }
            Err(e) => assert!(!self.in_sync, "an honest close refused: {e}"),
        }
    }

    /// The funding has `conf % 4` confirmations, at the real outpoint unless `conf`'s top bit is
    /// set.
    fn funding_confirmed(&mut self, conf: u8) {
        let (mut outpoint, txout) = self.opened.funding.clone();
        let elsewhere = conf & 0x80 != 0;
        if elsewhere {
            outpoint = OutPoint::new(outpoint.txid, outpoint.vout ^ 1);
        }
        let before = self.payee.state().clone();
        let result = self.payee.funding_confirmed(outpoint, &txout, u32::from(conf % 4));
        self.check_call(&before, &result, &"funding_confirmed");
        match result {
            Ok(actions) => {
                assert!(!elsewhere, "a confirmation elsewhere taken: {actions:?}");
                for reply in sent(actions) {
                    let taken = self.answer_payer(&reply);
                    assert!(!self.in_sync || taken.is_ok(), "{reply:?}: {taken:?}");
                }
            }
            Err(e) => assert!(
                elsewhere || !self.in_sync || self.payee.funded().is_none(),
                "the honest funding refused: {e}"
            ),
        }
    }

    /// The payer reconnects: the payments held back are lost with the old connection. The payer
    /// sends what picks the channel up where it was (`funding_created` again, or `reestablish`);
    /// the payee answers (`refund_signed`, or `channel_ready` once ready and `reconcile`, the
    /// newest payment it holds), and what the payer sends on taking those answers (the
    /// payments still in flight after the payee's newest, as one burst, or its
    /// `closing_signed`) goes to the payee, and the answers back.
    fn reestablish(&mut self) {
        self.held.clear();
        self.connected = true;
        let mut queue: VecDeque<Message> =
            sent(self.payer.reestablish().expect("the payer's state rebuilds")).into();
        let mut pays = Vec::new();
        // Each message of the payer is answered by at most two of the payee's, each of those
        // by at most one burst: a few rounds at most.
        let mut rounds = 0;
        while let Some(msg) = queue.pop_front() {
            rounds += 1;
            assert!(rounds < 64, "a reconnect that does not settle: {msg:?}");
            self.remember(&msg);
            if let Message::Pay(_) = &msg {
                pays.push(Held { pay: msg, drop_after: false });
                continue;
            }
            if let Message::Reestablish(_) = &msg {
                assert!(
                    queue.is_empty() && pays.is_empty(),
                    "an open payer sends only reestablish and waits for reconcile: {queue:?}"
                );
            }
            match self.deliver(&msg) {
                Ok(actions) => {
                    for reply in sent(actions) {
                        if let Message::Reconcile(r) = &reply {
                            self.check_reconcile(r);
                        }
                        match self.answer_payer(&reply) {
                            Ok(actions) => queue.extend(sent(actions)),
                            Err(e) => {
                                assert!(
                                    !self.in_sync,
                                    "the payer refused the payee's {reply:?}: {e}"
                                )
                            }
                        }
                        if let (Message::Reconcile(_), true) = (&reply, self.in_sync) {
                            // Both stand on the payee's newest payment.
                            let payer = self.payer.funded().map_or(0, |f| f.funded.payments());
                            assert_eq!(payer, self.payee_payments(), "after {reply:?}");
                            assert_eq!(self.payer.paid(), self.payee.paid(), "after {reply:?}");
                            // And on its newest checkpoint.
                            let number = |c: Option<&paychan::channel::SignedUpdate>| {
                                c.map_or(0, |c| c.number)
                            };
                            let payer_cp = number(
                                self.payer.funded().and_then(|f| f.funded.checkpoint.as_ref()),
                            );
                            let payee_cp =
                                number(self.payee.funded().and_then(|f| f.checkpoint.as_ref()));
                            assert_eq!(payer_cp, payee_cp, "checkpoints after {reply:?}");
                        }
                    }
                }
                Err(e) => assert!(!self.in_sync, "an honest {msg:?} refused: {e}"),
            }
        }
        if !pays.is_empty() {
            self.burst(pays);
        }
    }

    /// Checks the payee's `reconcile`: its newest payment as stored, with the payer's valid
    /// signature over its commitment, and its newest checkpoint as stored, with the payee's
    /// valid signature.
    fn check_reconcile(&self, r: &Reconcile) {
        assert_eq!(r.channel_id, CHANNEL_ID);
        let f = self.payee.funded().expect("a reconcile comes from a funded channel");
        let builder = f.channel.builder();
        let sighash = |paid: Amount, locktime: u32| {
            let tx = builder.commitment(paid, locktime).expect("a stored payment");
            builder.sighash(&tx).expect("a channel transaction")
        };
        let checkpoint = f.checkpoint.as_ref();
        assert_eq!(
            (r.checkpoint_update, r.checkpoint_paid_sat, r.checkpoint_locktime),
            checkpoint.map_or((0, 0, 0), |c| (c.number, c.paid.to_sat(), c.locktime)),
            "{r:?}: the newest checkpoint is {checkpoint:?}"
        );
        assert_eq!(r.payee_signature, checkpoint.map(|c| RawSignature::from(c.payee_sig)));
        if let (Some(c), Some(raw)) = (checkpoint, &r.payee_signature) {
            let sig = parse_signature(&raw.0).expect("the payee's own signature parses");
            self.verify(sighash(c.paid, c.locktime), &sig, &self.fixture.payee_signer.public_key())
                .expect("the reconcile's payee signature verifies");
        }
        let Some(p) = f.newest.as_ref() else {
            assert_eq!(
                (r.update, r.paid_total_sat, &r.payer_signature),
                (0, 0, &None),
                "a reconcile without a payment"
            );
            return;
        };
        assert_eq!(
            (r.update, r.paid_total_sat, r.locktime, r.checkpoint),
            (p.number, p.paid.to_sat(), p.locktime, p.checkpoint),
            "{r:?} / {p:?}"
        );
        assert_eq!(
            (r.since_checkpoint, r.paid_since_checkpoint_sat),
            (p.since_checkpoint, p.paid_since_checkpoint.to_sat()),
            "{r:?} / {p:?}"
        );
        let raw = r.payer_signature.as_ref().expect("the payer's signature on the newest");
        let sig = parse_signature(&raw.0).expect("a stored signature parses");
        self.verify(sighash(p.paid, p.locktime), &sig, &self.fixture.payer_signer.public_key())
            .expect("the reconcile's payer signature verifies");
    }

    /// Moves the tip: `mode % 4` 0 to anywhere from 100 below the open to past the refund, 1 one
    /// block on, 2 up to 31 blocks on, 3 up to 7 blocks back (a reorganization). Then checks the
    /// payee's answer to the new tip against the payer's, and carries a `shutdown` to the payer.
    fn move_tip(&mut self, mode: u8, value: u16) {
        let value = u32::from(value);
        self.tip = match mode % 4 {
            0 => TIP - 100 + value % (REFUND - TIP + 200),
            1 => self.tip + 1,
            2 => self.tip + value % 32,
            _ => self.tip.saturating_sub(value % 8),
        };
        let actions = self.payee.tip_changed(self.tip).expect("a consistent state rebuilds");
        // What the payee may broadcast: the settlement once settled, else the newest commitment.
        let expected = match self.payee.funded().and_then(|f| f.settlement_tx().expect("rebuilds"))
        {
            Some(settlement) => Some(settlement),
            None => self.payee.newest_commitment().expect("rebuilds"),
        };
        let broadcasts = actions.iter().any(|a| matches!(a, PayeeAction::Broadcast(_)));
        self.check_payer_exit(broadcasts);
        for action in actions {
            match action {
                PayeeAction::Broadcast(tx) => {
                    assert_eq!(Some(&tx), expected.as_ref(), "broadcast at tip {}", self.tip);
                    let lock = tx.lock_time.to_consensus_u32();
                    assert!(lock <= self.tip, "broadcast of locktime {lock} at tip {}", self.tip);
                }
                PayeeAction::Send(msg @ Message::Shutdown(_)) => {
                    // The payer answers a shutdown with closing_signed.
                    if !self.connected {
                        continue;
                    }
                    if let Ok(actions) = self.answer_payer(&msg) {
                        if let [closing] = &sent(actions)[..] {
                            self.close_with(&closing.clone());
                        }
                    }
                }
                other => panic!("tip_changed asked for {other:?}"),
            }
        }
    }

    /// Checks the payer's answer to the tip: once its way out (its newest checkpoint, or the
    /// refund) is final, the payee's newest state, if it is another, has been final for at least
    /// `step` blocks, and the payee broadcasts it (`payee_broadcasts`).
    fn check_payer_exit(&self, payee_broadcasts: bool) {
        let actions = self.payer.tip_changed(self.tip).expect("the payer's state rebuilds");
        let Some(exit) = actions.iter().find_map(|a| match a {
            PayerAction::Broadcast(tx) => Some(tx),
            _ => None,
        }) else {
            return;
        };
        let lock = exit.lock_time.to_consensus_u32();
        assert!(lock <= self.tip, "the payer broadcast locktime {lock} at tip {}", self.tip);
        let payer = &self.payer.funded().expect("a funded payer broadcasts").funded;
        assert_eq!(lock, payer.checkpoint_locktime());
        let Some(f) = self.payee.funded().filter(|f| f.ready && f.settlement.is_none()) else {
            return;
        };
        let Some(p) = &f.newest else { return };
        if payer.checkpoint.as_ref().is_some_and(|c| c.number == p.number) {
            return;
        }
        assert!(
            u64::from(p.locktime) + u64::from(STEP) <= u64::from(self.tip),
            "the payer's exit at {lock} is final at tip {}, the payee's newest {p:?} not a step \
             before",
            self.tip
        );
        assert!(payee_broadcasts, "the payee sits on its final newest {p:?} at tip {}", self.tip);
    }

    /// Returns an honest message with one field changed.
    ///
    /// `base % 8`: 0 a `pay` of `(value >> 48) % 20000 + 1` sat signed now by a copy of the
    /// payer standing where the payee stands ([`Run::payer_copy`]), as its policy says, 1 the
    /// same forced to be a checkpoint, 2 a `closing_signed` signed now by that copy, 3 the
    /// `funding_created`, 4 the `open_channel`, 5 to 7 a message from the history (`base / 8`
    /// counted back from the newest). `field % 16` picks the change (see the match); with
    /// `field`'s top bit set the payer's key signs the changed `pay` or `closing_signed`, as a
    /// payer cheating with its own key would.
    fn mutated(&self, base: u8, field: u8, value: u64) -> Option<Message> {
        let amount = Amount::from_sat((value >> 48) % 20_000 + 1);
        let mut msg = match base % 8 {
            0 => sent(self.payer_copy()?.pay(amount, self.tip).ok()?).pop()?,
            1 => sent(self.payer_copy()?.pay_checkpoint(amount, self.tip).ok()?).pop()?,
            2 => sent(self.payer_copy()?.close().ok()?).pop()?,
            3 => self.opened.funding_created.clone(),
            4 => self.opened.open_channel.clone(),
            _ => {
                let back = usize::from(base / 8) % self.history.len().max(1);
                self.history.get(self.history.len().checked_sub(back + 1)?)?.clone()
            }
        };
        let payments = self.payee_payments();
        match (field % 16, &mut msg) {
            (0, _) => {
                let mut id = msg.channel_id();
                id.0[(value % 32) as usize] ^= nonzero_u8(value >> 8);
                set_channel_id(&mut msg, id);
            }
            (1, Message::Pay(m)) => m.update = tweak(m.update, value),
            (1 | 2, Message::ClosingSigned(m)) => m.paid_total_sat = tweak(m.paid_total_sat, value),
            (1, Message::FundingCreated(m)) => m.vout = tweak32(m.vout, value),
            (1, Message::OpenChannel(m)) => {
                m.checkpoint_every_payments = (value % 5 != 4).then_some(value % 4)
            }
            (2, Message::Pay(m)) => m.paid_total_sat = tweak(m.paid_total_sat, value),
            (2, Message::FundingCreated(m)) => {
                let out = &mut m.funding_tx.output[0];
                out.value = Amount::from_sat(tweak(out.value.to_sat(), value));
            }
            (2, Message::OpenChannel(m)) => {
                m.checkpoint_every_sat = (value % 5 != 4).then_some(value % 3000)
            }
            (3, Message::Pay(m)) => m.locktime = tweak32(m.locktime, value),
            (3, Message::FundingCreated(m)) => {
                // Another txid, the same funding output.
                let lock = tweak32(m.funding_tx.lock_time.to_consensus_u32(), value);
                m.funding_tx.lock_time = absolute::LockTime::from_consensus(lock);
            }
            (3, Message::OpenChannel(m)) => {
                std::mem::swap(&mut m.checkpoint_every_payments, &mut m.checkpoint_every_sat)
            }
            (4, Message::Pay(m)) => {
                // Another rung of the ladder: 1 to 4 rungs up or down.
                let rungs = (value % 4 + 1) as u32 * STEP;
                m.locktime = if value & 4 == 0 {
                    m.locktime.wrapping_sub(rungs)
                } else {
                    m.locktime.wrapping_add(rungs)
                };
            }
            (4, Message::OpenChannel(m)) => m.step = tweak32(m.step, value),
            (5, Message::Pay(m)) => m.checkpoint = !m.checkpoint,
            (6, Message::Pay(m)) => {
                // The other reading of the flag, on the rung that reading would give next.
                m.checkpoint = !m.checkpoint;
                m.locktime = m.locktime.wrapping_sub(STEP);
            }
            (7, Message::Pay(m)) => match value % 4 {
                // A total around the payee's dust limit, one around the payer's (the capacity
                // less the fee), one more sat, or an older payment's number.
                0 => m.paid_total_sat = self.payee.paid().to_sat() + (value >> 2) % 600,
                1 => m.paid_total_sat = CAPACITY.to_sat().saturating_sub((value >> 2) % 1200),
                2 => m.paid_total_sat = self.payee.paid().to_sat() + 1,
                _ => m.update = payments.saturating_sub((value >> 2) % 3),
            },
            (kind, _) => {
                // Kinds 8 to 15, and 1 to 7 where the message lacks that field: the signature.
                let made_up = SegwitV0Sighash::from_byte_array([value as u8; 32]);
                let sighash = self.sighash_of(&msg);
                let sig = signature_mut(&mut msg)?;
                match kind % 4 {
                    0 if !sig.0.is_empty() => {
                        let i = (value % sig.0.len() as u64) as usize;
                        sig.0[i] ^= 1 << ((value >> 8) % 8);
                    }
                    1 if !sig.0.is_empty() && value.is_multiple_of(2) => {
                        sig.0.truncate((value / 2 % sig.0.len() as u64) as usize)
                    }
                    0 | 1 => sig.0.push((value >> 8) as u8),
                    2 if !sig.0.is_empty() => {
                        let last = sig.0.last_mut().expect("not empty");
                        let byte = value as u8;
                        *last = if byte == *last { byte ^ 0x80 } else { byte };
                    }
                    _ => {
                        // A valid signature by another key (the payee's own, or a stranger's)
                        // over what the payer should have signed, or by the payer over a
                        // made-up sighash.
                        let (signer, sighash) = match value % 3 {
                            0 => (&self.fixture.payee_signer, sighash.unwrap_or(made_up)),
                            1 => (&self.fixture.other_signer, sighash.unwrap_or(made_up)),
                            _ => (&self.fixture.payer_signer, made_up),
                        };
                        *sig = signer.sign(sighash).into();
                    }
                }
            }
        }
        if let Message::OpenChannel(open) = &msg {
            self.check_accept(open);
        }
        if field & 0x80 != 0 && matches!(msg, Message::Pay(_) | Message::ClosingSigned(_)) {
            let sighash = self.sighash_of(&msg)?;
            *signature_mut(&mut msg)? = self.fixture.payer_signer.sign(sighash).into();
        }
        Some(msg)
    }

    /// Returns a copy of the payer that stands where the payee stands: the payee's newest
    /// payment and checkpoint (whoever sent them), nothing in flight, open. So its `pay` is the
    /// one the payee expects next, and its `closing_signed` is for the payee's total.
    fn payer_copy(&self) -> Option<Payer> {
        let mut state = self.payer.state().clone();
        if let PayerStage::Funded(f) = &mut state.stage {
            if let Some(payee) = self.payee.funded() {
                f.funded.newest = payee.newest.map(|p| Payment { payer_sig: None, ..p });
                f.funded.checkpoint = payee.checkpoint.clone();
                f.funded.settlement = None;
            }
            f.funded.ready = true;
            f.pending.clear();
            f.closing_sig = None;
        }
        Payer::restore(self.fixture.payer_signer.clone(), state).ok()
    }

    /// Checks a fresh accept of `open`: its checkpoint policy is taken as it is, or refused when
    /// it is not well formed.
    fn check_accept(&self, open: &OpenChannel) {
        let policy = checkpoint_policy(open);
        let signer = self.fixture.payee_signer.clone();
        match Payee::accept(open, &payee_config(), signer, self.tip) {
            Ok((payee, _)) => assert_eq!(Some(payee.state().terms.checkpoints), policy),
            Err(ChannelError::BadCheckpointPolicy) => assert_eq!(policy, None, "{open:?}"),
            Err(_) => {}
        }
    }

    /// Returns the sighash of the transaction `msg` proposes (a `pay`'s commitment, a
    /// `closing_signed`'s settlement), rebuilt by the payee's channel.
    fn sighash_of(&self, msg: &Message) -> Option<SegwitV0Sighash> {
        let builder = self.payee.funded()?.channel.builder();
        let tx = match msg {
            Message::Pay(m) => builder.commitment(Amount::from_sat(m.paid_total_sat), m.locktime),
            Message::ClosingSigned(m) => builder.settlement(Amount::from_sat(m.paid_total_sat)),
            _ => return None,
        };
        builder.sighash(&tx.ok()?).ok()
    }

    /// Whether `msg`'s signature is the payer's over the transaction it proposes.
    fn payer_signed(&self, msg: &Message) -> bool {
        let raw = match msg {
            Message::Pay(m) => &m.signature,
            Message::ClosingSigned(m) => &m.signature,
            _ => return false,
        };
        let key = self.fixture.payer_signer.public_key();
        self.sighash_of(msg).is_some_and(|sighash| {
            parse_signature(&raw.0).is_ok_and(|sig| self.verify(sighash, &sig, &key).is_ok())
        })
    }

    fn verify(
        &self,
        sighash: SegwitV0Sighash,
        sig: &ecdsa::Signature,
        key: &PublicKey,
    ) -> Result<(), paychan::keys::SignatureError> {
        self.fixture.other_signer.verify(sighash, sig, key)
    }

    fn payee_payments(&self) -> u64 {
        self.payee.funded().map_or(0, FundedChannel::payments)
    }

    fn remember(&mut self, msg: &Message) {
        if self.history.len() == 64 {
            self.history.remove(0);
        }
        self.history.push(msg.clone());
    }
}

/// Keeps of a burst's answers what the daemon sends back (`channel::needed_acks`): every
/// checkpoint's ack and the newest ack, which covers every payment before it.
fn newest_acks(answers: Vec<Message>) -> Vec<Message> {
    let actions = answers.into_iter().map(PayeeAction::Send).collect();
    sent(paychan::channel::needed_acks(actions))
}

/// Returns the payee restored from `state`'s JSON.
fn restored(signer: &ChannelSigner, state: &PayeeState) -> Payee {
    let json = serde_json::to_vec(state).expect("the state serializes");
    let back: PayeeState = serde_json::from_slice(&json).expect("the state deserializes");
    assert_eq!(&back, state);
    Payee::restore(signer.clone(), back).expect("the state restores")
}

/// The checkpoint policy `open` proposes, or `None` if it is not well formed.
fn checkpoint_policy(open: &OpenChannel) -> Option<CheckpointPolicy> {
    let every_payments = match open.checkpoint_every_payments {
        Some(n) => Some(std::num::NonZeroU64::new(n)?),
        None => None,
    };
    let every_sat = open.checkpoint_every_sat.map(Amount::from_sat);
    let policy = CheckpointPolicy { every_payments, every_sat };
    policy.is_valid().then_some(policy)
}

/// Returns the funded channel of `state`, once funded.
fn funded(state: &PayeeState) -> Option<&FundedChannel> {
    match &state.stage {
        paychan::channel::PayeeStage::Funded(f) => Some(f),
        _ => None,
    }
}

/// Returns the settlement signatures of `state`, if settled.
fn settlement(state: &PayeeState) -> Option<&paychan::channel::SettlementSigs> {
    funded(state).and_then(|f| f.settlement.as_ref())
}

/// Returns `tx` without its witnesses.
fn strip(tx: &Transaction) -> Transaction {
    let mut tx = tx.clone();
    tx.input.iter_mut().for_each(|i| i.witness.clear());
    tx
}

/// Changes `x`: xor with a non-zero mask from `v`, or a step of 1 to 16 up or down.
fn tweak(x: u64, v: u64) -> u64 {
    let d = (v >> 2) % 16 + 1;
    match v % 4 {
        0 | 1 => x ^ (v >> 1).max(1),
        2 => x.wrapping_add(d),
        _ => x.wrapping_sub(d),
    }
}

/// Changes `x` as [`tweak`] does, within 32 bits.
fn tweak32(x: u32, v: u64) -> u32 {
    let d = ((v >> 2) % 16 + 1) as u32;
    match v % 4 {
        0 | 1 => x ^ ((v >> 1) as u32).max(1),
        2 => x.wrapping_add(d),
        _ => x.wrapping_sub(d),
    }
}

fn nonzero_u8(v: u64) -> u8 {
    (v as u8).max(1)
}

fn signature_mut(msg: &mut Message) -> Option<&mut RawSignature> {
    match msg {
        Message::Pay(m) => Some(&mut m.signature),
        Message::ClosingSigned(m) => Some(&mut m.signature),
        Message::RefundSigned(m) => Some(&mut m.signature),
        Message::PayAck(m) => m.signature.as_mut(),
        Message::ClosingAck(m) => Some(&mut m.signature),
        Message::Authenticate(m) => Some(&mut m.signature),
        Message::Reconcile(m) => m.payer_signature.as_mut(),
        _ => None,
    }
}

fn set_channel_id(msg: &mut Message, id: paychan::wire::ChannelId) {
    match msg {
        Message::OpenChannel(m) => m.channel_id = id,
        Message::AcceptChannel(m) => m.channel_id = id,
        Message::FundingCreated(m) => m.channel_id = id,
        Message::RefundSigned(m) => m.channel_id = id,
        Message::ChannelReady(m) => m.channel_id = id,
        Message::Pay(m) => m.channel_id = id,
        Message::PayAck(m) => m.channel_id = id,
        Message::Shutdown(m) => m.channel_id = id,
        Message::ClosingSigned(m) => m.channel_id = id,
        Message::ClosingAck(m) => m.channel_id = id,
        Message::Reestablish(m) => m.channel_id = id,
        Message::Error(m) => m.channel_id = id,
        Message::Authenticate(m) => m.channel_id = id,
        Message::Reconcile(m) => m.channel_id = id,
        Message::Extension(m) => m.channel_id = id,
    }
}
