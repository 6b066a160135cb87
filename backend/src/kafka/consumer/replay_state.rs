//! What the Kafka consumer keeps per owned partition to drop second copies of replayed records
//! ([`crate::replay`]), and what it commits so that a successor makes the same decisions.
//!
//! **Exactness.** The marks written with a commit at offset `N` are the marks of the records
//! before `N`: those committed with the previous position, plus the identities admitted since,
//! up to `N` ([`PartitionFilter::marks_at`]), whatever the consumer has read beyond `N`. Marks are
//! a function of the records read, in order ([`ReplayMarks`]), so a consumer that restarts from
//! `N` with them, or the partition's next owner after a rebalance, reads the same records from
//! `N` on and makes exactly the decisions this consumer would have made. A revoked partition's
//! marks in memory are discarded; a reassigned partition starts over from the group's commit.
//!
//! **Dropped tails.** A second copy is not returned, but its offset must still be committed past,
//! or the group's position stops before it (the lag never reaches zero, and every restart reads
//! it again). When a caller commits a partition's last returned record, the commit moves on over
//! the dropped copies that follow it ([`PartitionFilter::commit_for`]); a partition of which a
//! poll returned nothing but copies gets a commit of its own at the next poll, once everything
//! returned of it is committed ([`PartitionFilter::dropped_tail`]). Both are safe: the records
//! skipped were all second copies, which changed no mark, so the marks there are the same.
//!
//! **Before the marks are loaded** (at assignment, from the group's committed metadata, which may
//! fail while the cluster is unreachable) nothing of the partition is returned: its records are
//! held back and the partition is sought back to the first of them ([`ReplayState`]), so they are
//! read again, and filtered, once the marks are in.

use std::collections::VecDeque;

use crate::model::Offset;
use crate::replay::{ReplayIdentity, ReplayMarks};

/// A partition's replay state in the consumer.
#[derive(Debug)]
pub(super) enum ReplayState {
    /// The marks are not loaded: nothing of the partition may be returned yet. `rewind` is the
    /// first record held back, which must be read again once they are.
    Unloaded {
        rewind: Option<Rewind>,
    },
    Loaded(PartitionFilter),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rewind {
    pub to: Offset,
    /// The seek back to `to` went through: what is read from now on starts there again.
    pub sought: bool,
}

impl ReplayState {
    pub(super) fn unloaded() -> Self {
        Self::Unloaded { rewind: None }
    }

    /// Whether the records read now may be filtered as soon as the marks are loaded: nothing was
    /// held back, or the seek back to the first held-back record went through (librdkafka then
    /// returns nothing fetched before the seek).
    pub(super) fn may_load(&self) -> bool {
        matches!(
            self,
            Self::Unloaded {
                rewind: None | Some(Rewind { sought: true, .. })
            }
        )
    }

    /// Holds back this poll's records of an unloaded partition, the first of them at `first`
    /// (`None`: none read). Returns the offset to seek back to, if a seek is needed.
    pub(super) fn hold_back(&mut self, first: Option<Offset>) -> Option<Offset> {
        let Self::Unloaded { rewind } = self else {
            return None;
        };
        match (*rewind, first) {
            (_, Some(first)) => {
                let to = rewind.map_or(first, |earlier| earlier.to.min(first));
                *rewind = Some(Rewind { to, sought: false });
                Some(to)
            }
            (Some(Rewind { to, sought: false }), None) => Some(to),
            _ => None,
        }
    }

    /// Records whether the seek [`Self::hold_back`] asked for went through.
    pub(super) fn sought(&mut self, went_through: bool) {
        if let Self::Unloaded {
            rewind: Some(rewind),
        } = self
        {
            rewind.sought = went_through;
        }
    }
}

/// A position to commit for one partition and the marks that go with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CommitPlan {
    pub at: Offset,
    pub marks: ReplayMarks,
}

/// One loaded partition: its marks and what has been read, returned and committed of it.
#[derive(Debug)]
pub(super) struct PartitionFilter {
    /// The group's position as last committed (or loaded), and the marks committed with it.
    committed: Option<Offset>,
    committed_marks: ReplayMarks,
    /// The marks after every record read.
    marks: ReplayMarks,
    /// The identities admitted since `committed`, with their offsets, in offset order:
    /// `committed_marks` plus these is `marks`. Bounded by what was returned and not committed
    /// (the caller commits before polling again).
    admitted: VecDeque<(Offset, ReplayIdentity)>,
    /// One past the last record returned to the caller.
    returned_to: Option<Offset>,
    /// One past the last record read, returned or dropped.
    read_to: Option<Offset>,
}

impl PartitionFilter {
    /// A partition assigned with the group's committed position (`None`: none yet) and the
    /// marks committed with it.
    pub(super) fn loaded(committed: Option<Offset>, marks: ReplayMarks) -> Self {
        Self {
            committed,
            committed_marks: marks.clone(),
            marks,
            admitted: VecDeque::new(),
            returned_to: None,
            read_to: None,
        }
    }

    /// Reads the record at `offset` with its replay identity, if it has one. `true`: return it
    /// to the caller; `false`: a second copy, to drop.
    pub(super) fn read(&mut self, offset: Offset, identity: Option<ReplayIdentity>) -> bool {
        self.read_to = Some(offset.next());
        let first_copy = match identity {
            None => true,
            Some(identity) => {
                let first = self.marks.admit(identity);
                if first {
                    self.admitted.push_back((offset, identity));
                }
                first
            }
        };
        if first_copy {
            self.returned_to = Some(offset.next());
        }
        first_copy
    }

    /// What to commit when the caller says everything before `next` is processed: `next`, or
    /// past the second copies that follow it when `next` covers every record returned; `None`
    /// when the group's position is there already.
    pub(super) fn commit_for(&self, next: Offset) -> Option<CommitPlan> {
        if self.committed.is_some_and(|committed| committed >= next) {
            return None;
        }
        let covers_returned = self.returned_to.is_none_or(|returned| returned <= next);
        let at = match self.read_to {
            Some(read) if covers_returned && read > next => read,
            _ => next,
        };
        Some(self.plan(at))
    }

    /// The second copies read past the group's position, to commit on their own, once every
    /// record returned is committed.
    pub(super) fn dropped_tail(&self) -> Option<CommitPlan> {
        let read = self.read_to?;
        let committed_past = |offset: Offset| self.committed.is_some_and(|c| c >= offset);
        if committed_past(read) || self.returned_to.is_some_and(|r| !committed_past(r)) {
            return None;
        }
        Some(self.plan(read))
    }

    /// The commit went through.
    pub(super) fn committed(&mut self, plan: CommitPlan) {
        while self
            .admitted
            .front()
            .is_some_and(|(offset, _)| *offset < plan.at)
        {
            self.admitted.pop_front();
        }
        self.committed = Some(plan.at);
        self.committed_marks = plan.marks;
    }

    fn plan(&self, at: Offset) -> CommitPlan {
        CommitPlan {
            at,
            marks: self.marks_at(at),
        }
    }

    /// The marks of the records before `at`.
    fn marks_at(&self, at: Offset) -> ReplayMarks {
        if self.admitted.back().is_none_or(|(offset, _)| *offset < at) {
            return self.marks.clone();
        }
        let mut marks = self.committed_marks.clone();
        for (_, identity) in self.admitted.iter().take_while(|(offset, _)| *offset < at) {
            marks.admit(*identity);
        }
        marks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(origin: u64, sequence: u64) -> Option<ReplayIdentity> {
        Some(ReplayIdentity { origin, sequence })
    }

    fn marks_of(identities: &[(u64, u64)]) -> ReplayMarks {
        let mut marks = ReplayMarks::default();
        for (origin, sequence) in identities {
            marks.admit(ReplayIdentity {
                origin: *origin,
                sequence: *sequence,
            });
        }
        marks
    }

    #[test]
    fn second_copies_are_dropped_and_plain_records_pass() {
        let mut filter = PartitionFilter::loaded(None, ReplayMarks::default());
        assert!(filter.read(Offset(0), id(1, 0)));
        assert!(filter.read(Offset(1), None));
        assert!(filter.read(Offset(2), id(1, 1)));
        assert!(!filter.read(Offset(3), id(1, 0)));
        assert!(!filter.read(Offset(4), id(1, 1)));
        assert!(filter.read(Offset(5), None));
        assert!(filter.read(Offset(6), id(1, 2)));
    }

    #[test]
    fn loaded_marks_drop_copies_of_records_before_the_commit() {
        let mut filter = PartitionFilter::loaded(Some(Offset(10)), marks_of(&[(1, 4)]));
        assert!(!filter.read(Offset(10), id(1, 3)));
        assert!(!filter.read(Offset(11), id(1, 4)));
        assert!(filter.read(Offset(12), id(1, 5)));
    }

    #[test]
    fn a_commit_carries_the_marks_of_the_records_before_it_only() {
        let mut filter = PartitionFilter::loaded(Some(Offset(0)), marks_of(&[(9, 100)]));
        for (offset, sequence) in (0..6).zip(0..) {
            assert!(filter.read(Offset(offset), id(1, sequence)));
        }
        // The caller commits only up to offset 3: the marks are those of records 0, 1 and 2.
        let plan = filter.commit_for(Offset(3)).expect("a commit");
        assert_eq!(plan.at, Offset(3));
        assert_eq!(plan.marks, marks_of(&[(9, 100), (1, 2)]));
        filter.committed(plan);
        let plan = filter.commit_for(Offset(6)).expect("a commit");
        assert_eq!(plan.marks, marks_of(&[(9, 100), (1, 5)]));
        filter.committed(plan);
        assert_eq!(filter.commit_for(Offset(6)), None, "already committed");
        assert_eq!(filter.commit_for(Offset(4)), None, "never rewinds");
    }

    #[test]
    fn a_commit_of_the_last_returned_record_moves_past_the_copies_after_it() {
        let mut filter = PartitionFilter::loaded(None, ReplayMarks::default());
        assert!(filter.read(Offset(0), id(1, 0)));
        assert!(filter.read(Offset(1), id(1, 1)));
        assert!(!filter.read(Offset(2), id(1, 0)));
        assert!(!filter.read(Offset(3), id(1, 1)));
        let plan = filter.commit_for(Offset(2)).expect("a commit");
        assert_eq!(plan.at, Offset(4));
        assert_eq!(plan.marks, marks_of(&[(1, 1)]));
        // A commit that leaves returned records uncommitted stays where the caller said.
        let plan = filter.commit_for(Offset(1)).expect("a commit");
        assert_eq!(plan.at, Offset(1));
        assert_eq!(plan.marks, marks_of(&[(1, 0)]));
    }

    #[test]
    fn a_tail_of_copies_is_committed_on_its_own_once_everything_returned_is() {
        let mut filter = PartitionFilter::loaded(Some(Offset(5)), marks_of(&[(1, 9)]));
        assert_eq!(filter.dropped_tail(), None, "nothing read");
        assert!(!filter.read(Offset(5), id(1, 8)));
        assert!(!filter.read(Offset(6), id(1, 9)));
        let plan = filter.dropped_tail().expect("a tail of copies");
        assert_eq!(plan.at, Offset(7));
        assert_eq!(plan.marks, marks_of(&[(1, 9)]));
        filter.committed(plan);
        assert_eq!(filter.dropped_tail(), None, "committed");

        assert!(filter.read(Offset(7), id(1, 10)));
        assert!(!filter.read(Offset(8), id(1, 10)));
        assert_eq!(filter.dropped_tail(), None, "record 7 is not committed yet");
        let plan = filter.commit_for(Offset(8)).expect("a commit");
        assert_eq!(plan.at, Offset(9));
        filter.committed(plan);
        assert_eq!(filter.dropped_tail(), None);
    }

    #[test]
    fn held_back_records_are_read_again_from_the_first_of_them() {
        let mut state = ReplayState::unloaded();
        assert!(state.may_load());
        assert_eq!(
            state.hold_back(None),
            None,
            "nothing read, nothing to rewind"
        );
        assert_eq!(state.hold_back(Some(Offset(7))), Some(Offset(7)));
        assert!(!state.may_load(), "the seek has not gone through");
        state.sought(false);
        assert_eq!(
            state.hold_back(None),
            Some(Offset(7)),
            "the seek is retried"
        );
        // The failed seek let the consumer read on: still back to the first held-back record.
        assert_eq!(state.hold_back(Some(Offset(9))), Some(Offset(7)));
        state.sought(true);
        assert!(state.may_load());
        assert_eq!(state.hold_back(None), None, "sought, nothing read since");
        assert_eq!(state.hold_back(Some(Offset(7))), Some(Offset(7)));
    }
}
