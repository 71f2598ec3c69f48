//! Drives the payee's state machine with a sequence of operations read from the input: peer bytes
//! decoded as messages, honest payments and closes by the real payer, honest messages with one
//! field changed, replays, the tip moving, the funding's confirmations and reconnects.
//!
//! The input, byte by byte (reads past the end give zeros):
//!
//! - byte 0: where the channel starts: 0 awaiting funding, 1 funded but unconfirmed, else open;
//! - then operations until the input ends, each an opcode byte (taken modulo 8) and its operands:
//!   - 0 `len: u16 LE, bytes[len]`: the bytes decoded with `Message::decode`, given to the payee;
//!   - 1 `amount: u16 LE`: the payer pays `amount & 0x7fff` sat. With the top bit set its `pay`
//!     is held back (the payer pipelines); otherwise the held-back `pay`s and this one go to the
//!     payee in order, and each `pay_ack` back to the payer. A reconnect (6) loses the held-back
//!     ones and the payer resends them;
//!   - 2 `base: u8, field: u8, value: u64 LE`: an honest message with one field changed (see
//!     [`Run::mutated`]) goes to the payee;
//!   - 3 `mode: u8, value: u16 LE`: the tip moves (see [`Run::move_tip`]);
//!   - 4: the payer closes; its `closing_signed` goes to the payee and the `closing_ack` back;
//!   - 5 `conf: u8`: the funding has `conf % 4` confirmations (at another outpoint if `conf`'s
//!     top bit is set);
//!   - 6: the payer reconnects and repeats what it is waiting on;
//!   - 7 `index: u8`: a message the payer sent before is delivered again, as it was.
//!
//! With `PAYEE_TRACE` set in the environment, each operation's outcome is printed (to read a
//! crash input).
//!
//! Checked after every step: nothing panics; a call that fails leaves the payee's state exactly as
//! it was; the paid total never decreases and never exceeds the capacity; every `pay_ack` is for
//! the payee's newest update, whose payer signature verifies against the rebuilt commitment;
//! a state change is persisted first and restores; a message whose signature is not the payer's
//! over the fields it carries changes nothing; a settled payee never changes again; and while the
//! payee has taken nothing the payer did not send, every honest message is taken.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use paychan::bitcoin::hashes::Hash;
use paychan::bitcoin::sighash::SegwitV0Sighash;
use paychan::bitcoin::{absolute, Amount, OutPoint};
use paychan::channel::{Action, ChannelError, Payee, PayeeState, Payer};
use paychan::keys::ChannelSigner;
use paychan::wire::{Message, PayAck, RawSignature};
use paychan_fuzz::{sent, signer, Opened, CAPACITY, CHANNEL_ID, REFUND, TIP};

/// What every input starts from, built once.
struct Fixture {
    opened: Opened,
    payer_signer: ChannelSigner,
    payee_signer: ChannelSigner,
    other_signer: ChannelSigner,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fixture = FIXTURE.get_or_init(|| Fixture {
        opened: Opened::new(),
        payer_signer: signer(1),
        payee_signer: signer(2),
        other_signer: signer(9),
    });
    let mut input = Input(data);
    let start = match input.u8() % 4 {
        0 => &fixture.opened.awaiting_funding,
        1 => &fixture.opened.funded,
        _ => &fixture.opened.open,
    };
    let trace = std::env::var_os("PAYEE_TRACE").is_some();
    let mut run = Run {
        fixture,
        payer: start.payer.clone(),
        payee: start.payee.clone(),
        tip: TIP,
        in_sync: true,
        history: Vec::new(),
        held: Vec::new(),
        paid: start.payee.paid(),
    };
    while !input.0.is_empty() {
        let op = input.0[0] % 8;
        run.step(&mut input);
        if trace {
            let (payee, payer) = (run.payee.state().stage.name(), run.payer.state().stage.name());
            let paid = (run.payer.paid(), run.payee.paid());
            eprintln!(
                "op {op}: payer {payer}, payee {payee}, paid {paid:?}, tip {}, in sync {}",
                run.tip, run.in_sync
            );
        }
    }
});

/// The rest of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// One input's run: both parties, the tip, and what the checks remember.
struct Run<'a> {
    fixture: &'a Fixture,
    payer: Payer,
    payee: Payee,
    tip: u32,
    /// Whether the payee has taken only what the real payer sent. Once it has taken anything
    /// else (a mutated funding, a payment the fuzzer signed with the payer's key) the two may
    /// disagree and honest messages may be refused.
    in_sync: bool,
    /// The messages the real payer sent, for replays and as bases of mutations (the last 64).
    history: Vec<Message>,
    /// Payments the payer signed and has not sent yet (it pipelines), with the tip at signing.
    held: Vec<(Message, u32)>,
    /// The highest paid total seen.
    paid: Amount,
}

impl Run<'_> {
    fn step(&mut self, input: &mut Input) {
        match input.u8() % 8 {
            0 => {
                let len = usize::from(input.u16());
                if let Ok(msg) = Message::decode(input.bytes(len)) {
                    self.deliver_foreign(&msg, false);
                }
            }
            1 => {
                let amount = input.u16();
                self.honest_pay(Amount::from_sat(u64::from(amount & 0x7fff)), amount & 0x8000 != 0);
            }
            2 => {
                let (base, field, value) = (input.u8(), input.u8(), input.u64());
                if let Some((msg, forged)) = self.mutated(base, field, value) {
                    self.deliver_foreign(&msg, forged);
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
                    let msg = self.history[index % self.history.len()].clone();
                    self.deliver_foreign(&msg, false);
                }
            }
        }
    }

    /// Gives `msg` to the payee and checks what came of it.
    fn deliver(&mut self, msg: &Message) -> Result<Vec<Action>, ChannelError> {
        let before = self.payee.state().clone();
        let result = self.payee.handle_message(msg, self.tip);
        self.check_call(&before, &result, msg);
        result
    }

    /// Delivers a message the real payer did not send (or not now). `forged`: its signature is
    /// not the payer's over the fields it carries.
    fn deliver_foreign(&mut self, msg: &Message, forged: bool) {
        let before = self.payee.state().clone();
        let _ = self.deliver(msg);
        if self.payee.state() != &before {
            assert!(!forged, "a forged {msg:?} changed the payee's state");
            self.in_sync = false;
        }
    }

    /// Checks a call on the payee that started from `before` and returned `result`.
    fn check_call(
        &mut self,
        before: &PayeeState,
        result: &Result<Vec<Action>, ChannelError>,
        what: &dyn std::fmt::Debug,
    ) {
        let after = self.payee.state();
        match result {
            Err(e) => assert_eq!(after, before, "{what:?} refused ({e}) but changed the state"),
            Ok(actions) => {
                if after != before {
                    assert!(
                        settlement(before).is_none(),
                        "{what:?} changed a settled payee: {before:?} -> {after:?}"
                    );
                    assert_eq!(actions.first(), Some(&Action::Persist), "{what:?}: {actions:?}");
                    self.check_restores();
                }
                for action in actions {
                    if let Action::Send(Message::PayAck(ack)) = action {
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

    /// Checks that the persisted state survives JSON and restores a payee.
    fn check_restores(&self) {
        let state = self.payee.state();
        let json = serde_json::to_vec(state).expect("the state serializes");
        let back: PayeeState = serde_json::from_slice(&json).expect("the state deserializes");
        assert_eq!(&back, state);
        Payee::restore(self.fixture.payee_signer.clone(), back).expect("the state restores");
    }

    /// Checks that `ack` is for the payee's newest update, which both parties signed.
    fn check_ack(&self, ack: &PayAck) {
        let f = self.payee.funded().expect("an ack comes from a funded channel");
        let latest = f.latest.as_ref().expect("an ack follows a signed update");
        assert_eq!(ack.update, latest.number, "ack for an update other than the newest");
        assert_eq!(ack.channel_id, CHANNEL_ID);
        assert_eq!(ack.signature, RawSignature::from(latest.payee_sig));
        let builder = f.channel.builder();
        let tx = builder.commitment(latest.paid, latest.locktime).expect("a stored commitment");
        assert_eq!(tx.lock_time.to_consensus_u32(), latest.locktime);
        let sighash = builder.sighash(&tx).expect("a channel transaction");
        let keys = [
            (&latest.payer_sig, &self.fixture.payer_signer),
            (&latest.payee_sig, &self.fixture.payee_signer),
        ];
        for (sig, key) in keys {
            self.fixture
                .other_signer
                .verify(sighash, sig, &key.public_key())
                .expect("both signatures on the newest commitment verify");
        }
    }

    /// The payer pays `amount`. Held back, its `pay` waits (the payer pipelines); otherwise the
    /// payments held back go to the payee first, then this one, and each answer goes back.
    fn honest_pay(&mut self, amount: Amount, hold: bool) {
        let Ok(actions) = self.payer.pay(amount, self.tip) else { return };
        let mut msgs = sent(actions);
        assert_eq!(msgs.len(), 1, "pay sends one message");
        let pay = msgs.remove(0);
        self.remember(&pay);
        self.held.push((pay, self.tip));
        if !hold {
            for (pay, signed_at) in std::mem::take(&mut self.held) {
                if !self.deliver_pay(&pay, signed_at) {
                    break;
                }
            }
        }
    }

    /// Delivers an honest `pay` signed at tip `signed_at`, and the answer back. Returns whether
    /// the payee took it; if not, the payer forgets its payments in flight, as after an `error`.
    fn deliver_pay(&mut self, pay: &Message, signed_at: u32) -> bool {
        match self.deliver(pay) {
            Ok(actions) => {
                let ack = sent(actions).into_iter().find(|m| matches!(m, Message::PayAck(_)));
                let ack = ack.expect("a payment taken is acknowledged");
                let taken = self.payer.handle_message(&ack);
                if self.in_sync {
                    taken.expect("the payer takes the payee's ack");
                    assert_eq!(self.payer.paid(), self.payee.paid());
                } else if taken.is_err() {
                    self.payer.abandon_pending();
                    self.held.clear();
                }
                true
            }
            Err(e) => {
                // Signed at an earlier tip, a payment may have come too close to it since.
                let late = signed_at != self.tip && matches!(e, ChannelError::Ladder(_));
                assert!(!self.in_sync || late, "an honest {pay:?} refused: {e}");
                self.payer.abandon_pending();
                self.held.clear();
                false
            }
        }
    }

    /// The payer closes; the payee's answer goes back to it.
    fn honest_close(&mut self) {
        let Ok(actions) = self.payer.close() else { return };
        let msgs = sent(actions);
        let [closing] = &msgs[..] else { panic!("close sends one message") };
        self.close_with(closing);
    }

    fn close_with(&mut self, closing: &Message) {
        self.remember(closing);
        match self.deliver(closing) {
            Ok(actions) => {
                assert!(
                    actions.iter().any(|a| matches!(a, Action::Broadcast(_))),
                    "a settlement taken is broadcast: {actions:?}"
                );
                for reply in sent(actions) {
                    let taken = self.payer.handle_message(&reply);
                    assert!(!self.in_sync || taken.is_ok(), "{reply:?}: {taken:?}");
                }
            }
            Err(e) => assert!(!self.in_sync, "an honest close refused: {e}"),
        }
    }

    /// The funding has `conf % 4` confirmations, at the real outpoint unless `conf`'s top bit is
    /// set.
    fn funding_confirmed(&mut self, conf: u8) {
        let (mut outpoint, txout) = self.fixture.opened.funding.clone();
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
                    let taken = self.payer.handle_message(&reply);
                    assert!(!self.in_sync || taken.is_ok(), "{reply:?}: {taken:?}");
                }
            }
            Err(e) => assert!(
                elsewhere || !self.in_sync || self.payee.funded().is_none(),
                "the honest funding refused: {e}"
            ),
        }
    }

    /// The payer reconnects: the payments held back are lost with the old connection, and what
    /// the payer repeats goes to the payee, and the answers back.
    fn reestablish(&mut self) {
        let held = std::mem::take(&mut self.held);
        for msg in sent(self.payer.reestablish()) {
            self.remember(&msg);
            if let Message::Pay(p) = &msg {
                let signed_at = held.iter().find_map(|(m, tip)| match m {
                    Message::Pay(h) if h.update == p.update => Some(*tip),
                    _ => None,
                });
                if !self.deliver_pay(&msg, signed_at.unwrap_or(self.tip)) {
                    break;
                }
                continue;
            }
            match self.deliver(&msg) {
                Ok(actions) => {
                    for reply in sent(actions) {
                        let taken = self.payer.handle_message(&reply);
                        assert!(!self.in_sync || taken.is_ok(), "{reply:?}: {taken:?}");
                    }
                }
                Err(e) => assert!(!self.in_sync, "an honest {msg:?} refused: {e}"),
            }
        }
    }

    /// Moves the tip: `mode % 4` 0 to anywhere from 100 below the open to past the refund, 1 one
    /// block on, 2 up to 31 blocks on, 3 up to 7 blocks back (a reorganization). Then checks the
    /// payee's answer to the new tip, and carries a `shutdown` to the payer.
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
        let expected = self.payee.funded().and_then(|f| {
            let settlement = f.settlement_tx().expect("rebuilds");
            settlement.or_else(|| f.newest_commitment().expect("rebuilds"))
        });
        for action in actions {
            match action {
                Action::Broadcast(tx) => {
                    assert_eq!(Some(&tx), expected.as_ref(), "broadcast at tip {}", self.tip);
                    let lock = tx.lock_time.to_consensus_u32();
                    assert!(lock <= self.tip, "broadcast of locktime {lock} at tip {}", self.tip);
                }
                Action::Send(msg @ Message::Shutdown(_)) => {
                    // The payer answers a shutdown with closing_signed.
                    if let Ok(actions) = self.payer.handle_message(&msg) {
                        if let [closing] = &sent(actions)[..] {
                            self.close_with(&closing.clone());
                        }
                    }
                }
                other => panic!("tip_changed asked for {other:?}"),
            }
        }
    }

    /// Returns an honest message with one field changed, and whether its signature is then not
    /// the payer's over the fields it carries.
    ///
    /// `base % 4`: 0 a `pay` of `value % 20000 + 1` sat signed now by a copy of the payer, 1 a
    /// `closing_signed` signed now by a copy of the payer, 2 the `funding_created`, 3 a message
    /// from the history. `field % 8` picks the change (see the match); with `field`'s top bit set
    /// the payer's key signs the changed fields, as a payer cheating with its own key would.
    fn mutated(&self, base: u8, field: u8, value: u64) -> Option<(Message, bool)> {
        let mut copy = self.payer.clone();
        copy.abandon_pending();
        let mut msg = match base % 4 {
            0 => sent(copy.pay(Amount::from_sat(value % 20_000 + 1), self.tip).ok()?).pop()?,
            1 => sent(copy.close().ok()?).pop()?,
            2 => self.fixture.opened.funding_created.clone(),
            _ => self.history.get(usize::from(base / 4) % self.history.len().max(1))?.clone(),
        };
        match (field % 8, &mut msg) {
            (0, _) => {
                let mut id = msg.channel_id();
                id.0[(value % 32) as usize] ^= nonzero_u8(value >> 8);
                set_channel_id(&mut msg, id);
            }
            (1, Message::Pay(m)) => m.update = tweak(m.update, value),
            (1 | 2, Message::ClosingSigned(m)) => m.paid_total_sat = tweak(m.paid_total_sat, value),
            (1, Message::FundingCreated(m)) => m.vout = tweak32(m.vout, value),
            (2, Message::Pay(m)) => m.paid_total_sat = tweak(m.paid_total_sat, value),
            (2, Message::FundingCreated(m)) => {
                let out = &mut m.funding_tx.output[0];
                out.value = Amount::from_sat(tweak(out.value.to_sat(), value));
            }
            (3, Message::Pay(m)) => m.locktime = tweak32(m.locktime, value),
            (3, Message::FundingCreated(m)) => {
                // Another txid, the same funding output.
                let lock = tweak32(m.funding_tx.lock_time.to_consensus_u32(), value);
                m.funding_tx.lock_time = absolute::LockTime::from_consensus(lock);
            }
            (kind, _) => {
                // Kinds 4 to 7, and 1 to 3 where the message lacks that field: the signature.
                let made_up = SegwitV0Sighash::from_byte_array([value as u8; 32]);
                let sighash = self.sighash_of(&msg);
                let sig = signature_mut(&mut msg)?;
                match kind {
                    4 if !sig.0.is_empty() => {
                        let i = (value % sig.0.len() as u64) as usize;
                        sig.0[i] ^= 1 << ((value >> 8) % 8);
                    }
                    5 if !sig.0.is_empty() && value.is_multiple_of(2) => {
                        sig.0.truncate((value / 2 % sig.0.len() as u64) as usize)
                    }
                    4 | 5 => sig.0.push((value >> 8) as u8),
                    6 if !sig.0.is_empty() => {
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
        let signed = matches!(msg, Message::Pay(_) | Message::ClosingSigned(_));
        if field & 0x80 != 0 && signed {
            let sighash = self.sighash_of(&msg)?;
            *signature_mut(&mut msg)? = self.fixture.payer_signer.sign(sighash).into();
            return Some((msg, false));
        }
        // Every change above leaves a `pay` or `closing_signed` that the payer did not sign.
        Some((msg, signed))
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

    fn remember(&mut self, msg: &Message) {
        if self.history.len() == 64 {
            self.history.remove(0);
        }
        self.history.push(msg.clone());
    }
}

/// Returns the settlement signatures of `state`, if settled.
fn settlement(state: &PayeeState) -> Option<&paychan::channel::SettlementSigs> {
    match &state.stage {
        paychan::channel::PayeeStage::Funded(f) => f.settlement.as_ref(),
        _ => None,
    }
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
        Message::PayAck(m) => Some(&mut m.signature),
        Message::ClosingAck(m) => Some(&mut m.signature),
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
        Message::FileRequest(m) => m.channel_id = id,
        Message::FileOffer(m) => m.channel_id = id,
        Message::FileChunk(m) => m.channel_id = id,
    }
}
