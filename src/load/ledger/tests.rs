use super::*;
use crate::exit::Status;
use crate::load::batch::tests::{batch_of, line};
use crate::load::turns::Turns;

fn ledger(rejects: Option<Rejects>) -> Ledger {
    Ledger::new(vec!["in.jsonl".into()], Verbosity::Quiet, rejects, None)
}

#[test]
fn every_line_read_is_inserted_or_dropped_once() {
    let ledger = ledger(None);
    let turns = Turns::default();
    let batch = batch_of(&[1, 2, 3, 4]);
    ledger.read(4);
    ledger.drop_read(0, 5, Dropped::Invalid, &"bad");
    let turn = turns.wait(0);
    let refused = [Refused {
        timing: Timing::Untimed,
        index: 0,
        reason: "no".into(),
    }];
    let prepared = ledger
        .prepare(
            &batch,
            &refused,
            0,
            Some(&Txn {
                id: 1,
                timeline: None,
                stats_reset: None,
                savepoints: false,
            }),
            &turn,
        )
        .expect("prepare");
    ledger.committed(&batch, &refused, prepared);
    let counts = ledger.counts();
    assert_eq!(counts.read, 5);
    assert_eq!(counts.inserted, 3);
    assert_eq!(counts.inserted + counts.dropped(), counts.read);
    assert_eq!((counts.invalid, counts.refused), (1, 1));
    assert_eq!(counts.rejected(), 2);
    assert_eq!(counts.status(), Status::DataErr);
}

#[test]
fn status_follows_the_worst_drop() {
    let mut counts = Counts::default();
    assert_eq!(counts.status(), Status::Ok);
    counts.drop_one(Dropped::Refused);
    assert_eq!(counts.status(), Status::DataErr);
    counts.drop_one(Dropped::Interrupted);
    assert_eq!(counts.status(), Status::DataErr);
    counts.drop_one(Dropped::Uncertain);
    assert_eq!(counts.status(), Status::TempFail);
}

#[test]
fn set_aside_lines_are_read_and_lost() {
    let ledger = ledger(None);
    ledger.set_aside(3);
    let counts = ledger.counts();
    assert_eq!(
        (counts.read, counts.lost, counts.set_aside, counts.status()),
        (3, 3, 3, Status::TempFail)
    );
}

#[test]
fn dropped_lines_reach_the_reject_file_as_read_once() {
    let dir = std::env::temp_dir().join(format!("pgsense-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rejects");
    let _ = std::fs::remove_file(&path);
    let ledger = ledger(Some(Rejects::open(&path).expect("open reject file")));
    let turns = Turns::default();
    let mut batch = batch_of(&[7, 8]);
    batch.reject(b"{oops");
    // A first attempt whose COMMIT failed: its lines are taken back.
    let turn = turns.wait(0);
    let prepared = ledger
        .prepare(
            &batch,
            &[],
            0,
            Some(&Txn {
                id: 1,
                timeline: None,
                stats_reset: None,
                savepoints: false,
            }),
            &turn,
        )
        .expect("prepare");
    ledger.unprepare(prepared);
    ledger.dropped(&batch, Dropped::Lost, FAILED_EARLIER, &turn);
    drop(turn);
    let (counts, rejects, saved) = ledger.close();
    saved.expect("no state file to save");
    rejects.expect("a reject file").finish().expect("synced");
    let text = std::fs::read_to_string(&path).expect("read reject file");
    // Timed rows (odd lsns) come first, as the batch holds them.
    assert_eq!(
        text,
        format!(
            "{{oops\n{}\n{}\n",
            line(7).replace('}', r#","detected_at":"2024-01-01T00:00:00Z"}"#),
            line(8)
        )
    );
    assert_eq!(counts.lost, 2);
    let _ = std::fs::remove_dir_all(&dir);
}
