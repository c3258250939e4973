//! The controller's state machine reads bytes it did not write itself (a
//! leader's snapshot, log entries): arbitrary or damaged bytes give an
//! error or a refused command, never a panic; a refused snapshot changes
//! nothing.
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` runs more.

use cairn_rsm::StateMachine;
use cairn_shardctrler::Controller;
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_snapshots_are_refused_or_restored(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut controller = Controller::new(10);
        let before = controller.snapshot();
        if controller.restore(&bytes).is_err() {
            prop_assert_eq!(controller.snapshot(), before, "a refused snapshot changed the state");
        }
    }

    #[test]
    fn damaged_snapshots_are_refused_or_restored(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut controller = Controller::new(10);
        let mut bytes = controller.snapshot().to_vec();
        for (at, value) in flips {
            let at = at.index(bytes.len().max(1));
            if at < bytes.len() {
                bytes[at] = value;
            }
        }
        let before = controller.snapshot();
        if controller.restore(&bytes).is_err() {
            prop_assert_eq!(controller.snapshot(), before, "a refused snapshot changed the state");
        }
    }

    #[test]
    fn arbitrary_log_entries_are_applied_or_refused_without_a_panic(
        commands in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8),
    ) {
        let mut controller = Controller::new(10);
        for (index, command) in commands.iter().enumerate() {
            let _ = controller.apply(index as u64 + 1, command);
        }
    }
}
