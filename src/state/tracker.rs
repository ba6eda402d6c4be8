//! Which lines of the tracked inputs are done, and so what the state file
//! may say.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Mark, Resume, StateFile, now, tail};

/// Which lines of the tracked inputs are done, from which the marks to save
/// follow: a line is done once it is committed or dropped for good (reported,
/// and in the reject file when there is one). The mark of an input is the
/// start of its first line not done.
pub struct Tracker {
    file: StateFile,
    /// Per input (by index): its key and starting mark, and where it ended
    /// once read to its end; None for standard input.
    inputs: Vec<Option<Tracked>>,
    /// First rows (input, offset) of batches not done yet, with their line
    /// numbers and how many batches start there.
    outstanding: BTreeMap<(usize, u64), (u64, usize)>,
    /// Everything before this (input, offset, line) has been handed to a
    /// batch or dropped for good by the reader.
    reader: (usize, u64, u64),
    last_save: Instant,
}

struct Tracked {
    resume: Resume,
    end: Option<(u64, u64)>,
}

/// How often marks are saved during a run (and always at its end).
const SAVE_EVERY: Duration = Duration::from_secs(1);

impl Tracker {
    pub fn new(file: StateFile, inputs: Vec<Option<Resume>>) -> Tracker {
        let inputs: Vec<_> = inputs
            .into_iter()
            .map(|input| input.map(|resume| Tracked { resume, end: None }))
            .collect();
        Tracker {
            file,
            inputs,
            outstanding: BTreeMap::new(),
            reader: (0, 0, 0),
            last_save: Instant::now(),
        }
    }

    /// The reader starts on input `index`.
    pub fn start_input(&mut self, index: usize) {
        let start = self.inputs[index]
            .as_ref()
            .map_or((0, 0), |t| (t.resume.mark.offset, t.resume.mark.line));
        self.reader = (index, start.0, start.1);
    }

    /// A batch now starts with this row.
    pub fn open_batch(&mut self, index: usize, offset: u64, line: u64) {
        self.outstanding
            .entry((index, offset))
            .or_insert((line, 0))
            .1 += 1;
    }

    /// The batch that started with this row is done.
    pub fn close_batch(&mut self, index: usize, offset: u64) {
        if let Some(entry) = self.outstanding.get_mut(&(index, offset)) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.outstanding.remove(&(index, offset));
            }
        }
    }

    /// Everything before (offset, line) of input `index` has been handled by
    /// the reader.
    pub fn read_to(&mut self, index: usize, offset: u64, line: u64) {
        self.reader = (index, offset, line);
    }

    /// Input `index` was read up to (offset, line) and no further.
    pub fn end_input(&mut self, index: usize, offset: u64, line: u64) {
        if let Some(tracked) = &mut self.inputs[index] {
            tracked.end = Some((offset, line));
        }
        self.reader = (index + 1, 0, 0);
    }

    /// Whether a second has passed since the last save.
    pub fn due(&self) -> bool {
        self.last_save.elapsed() >= SAVE_EVERY
    }

    /// Where each tracked input is done up to: (input index, offset,
    /// line). Inputs not reached yet have no mark.
    fn done_to(&self) -> Vec<(usize, u64, u64)> {
        let (index, offset, line) = match self.outstanding.first_key_value() {
            Some((&(index, offset), &(line, _)))
                if (index, offset) < (self.reader.0, self.reader.1) =>
            {
                (index, offset, line)
            }
            _ => self.reader,
        };
        let mut done = Vec::new();
        for (i, tracked) in self.inputs.iter().enumerate() {
            let Some(tracked) = tracked else { continue };
            match i.cmp(&index) {
                Ordering::Less => {
                    if let Some((offset, line)) = tracked.end {
                        done.push((i, offset, line));
                    }
                }
                Ordering::Equal => done.push((i, offset, line)),
                Ordering::Greater => {}
            }
        }
        done
    }

    /// Saves the marks. The caller makes sure first that the dropped lines
    /// they pass over are on disk in the reject file.
    pub fn save(&mut self) -> Result<()> {
        self.last_save = Instant::now();
        let mut marks = Vec::new();
        for (i, offset, line) in self.done_to() {
            let tracked = self.inputs[i]
                .as_ref()
                .expect("done_to names tracked inputs");
            let mark = Mark {
                offset,
                line,
                tail: tail(&tracked.resume.probe, offset)?,
                seen: now(),
                path: tracked.resume.mark.path.clone(),
            };
            marks.push((tracked.resume.key.clone(), mark));
        }
        self.file.save(marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracker of `inputs` inputs, none resumed, without a state file:
    /// only what `done_to` computes is looked at.
    fn tracker(dir: &std::path::Path, inputs: usize) -> Tracker {
        let path = dir.join("state");
        let file = StateFile::open(&path).expect("open a state file");
        let resumes = (0..inputs)
            .map(|i| {
                let input = dir.join(format!("in{i}"));
                std::fs::write(&input, "").expect("write an input");
                let mut opened = std::fs::File::open(&input).expect("open an input");
                Some(file.resume(&input, &mut opened).expect("resume"))
            })
            .collect();
        Tracker::new(file, resumes)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgsense-tracker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn the_mark_stops_at_the_first_batch_not_done() {
        let dir = scratch("first");
        let mut t = tracker(&dir, 1);
        t.start_input(0);
        t.open_batch(0, 0, 0);
        t.read_to(0, 100, 10);
        t.open_batch(0, 100, 10);
        t.read_to(0, 200, 20);
        assert_eq!(t.done_to(), [(0, 0, 0)]);
        t.close_batch(0, 100);
        assert_eq!(t.done_to(), [(0, 0, 0)], "the first batch is still open");
        t.close_batch(0, 0);
        assert_eq!(t.done_to(), [(0, 200, 20)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn finished_inputs_keep_their_end_and_later_ones_have_no_mark() {
        let dir = scratch("ends");
        let mut t = tracker(&dir, 3);
        t.start_input(0);
        t.open_batch(0, 50, 5);
        t.end_input(0, 80, 8);
        t.start_input(1);
        t.read_to(1, 30, 3);
        assert_eq!(t.done_to(), [(0, 50, 5)], "input 0 waits for its batch");
        t.close_batch(0, 50);
        assert_eq!(t.done_to(), [(0, 80, 8), (1, 30, 3)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_opened_twice_at_one_row_needs_closing_twice() {
        let dir = scratch("twice");
        let mut t = tracker(&dir, 1);
        t.start_input(0);
        t.open_batch(0, 10, 1);
        t.open_batch(0, 10, 1);
        t.read_to(0, 90, 9);
        t.close_batch(0, 10);
        assert_eq!(t.done_to(), [(0, 10, 1)]);
        t.close_batch(0, 10);
        assert_eq!(t.done_to(), [(0, 90, 9)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
