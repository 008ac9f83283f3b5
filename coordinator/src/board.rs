//! Reassembly: chunks issued and not yet delivered, and the order they are
//! delivered in. In ordered mode a chunk is delivered when every chunk before
//! it has been; the scheduler issues at most a window of chunks ahead of the
//! oldest undelivered one, which bounds what is held here.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;

use fibpool_protocol::PackedValues;
use fibpool_protocol::packed::END_LEN;

use crate::pool::Item;
use crate::tasks::ChunkPlan;

pub(crate) struct Board {
    pub ordered: bool,
    entries: BTreeMap<u64, Entry>,
    /// The lowest chunk id not yet delivered.
    pub next_emit: u64,
    /// Chunks issued so far.
    pub issued: u64,
}

struct Entry {
    plan: ChunkPlan,
    values: Option<Values>,
}

/// A chunk's values as they arrived: the frame's payload, and where in it
/// the packed values' ends table and bytes lie. One buffer per chunk, not one
/// per value.
#[derive(Debug, Default)]
pub(crate) struct Values {
    pub buf: Vec<u8>,
    pub ends: Range<usize>,
    pub data: Range<usize>,
}

impl Values {
    /// Values that do not lie in a frame, copied into one buffer.
    pub fn copied(values: &PackedValues<'_>) -> Values {
        let (ends, data) = (values.ends(), values.data());
        Values {
            buf: [ends, data].concat(),
            ends: 0..ends.len(),
            data: ends.len()..ends.len() + data.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len() / END_LEN
    }

    /// The `i`th value; `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let (ends, data) = (
            self.buf.get(self.ends.clone())?,
            self.buf.get(self.data.clone())?,
        );
        fibpool_protocol::packed::value(ends, data, i)
    }
}

impl Board {
    pub fn new(ordered: bool) -> Self {
        Board {
            ordered,
            entries: BTreeMap::new(),
            next_emit: 0,
            issued: 0,
        }
    }

    /// True when every issued chunk has been delivered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn issue(&mut self, plan: ChunkPlan) {
        self.issued = self.issued.max(plan.id + 1);
        self.entries.insert(plan.id, Entry { plan, values: None });
    }

    /// The plan of an issued chunk not yet delivered.
    pub fn plan(&self, id: u64) -> Option<&ChunkPlan> {
        self.entries.get(&id).map(|e| &e.plan)
    }

    /// Records a chunk's values; refuses a second answer or a wrong count.
    pub fn complete(&mut self, id: u64, values: Values) -> Result<(), String> {
        let entry = match self.entries.get_mut(&id) {
            Some(entry) if entry.values.is_none() => entry,
            _ => return Err(format!("answered chunk {id} twice")),
        };
        if values.len() as u64 != entry.plan.count {
            return Err(format!(
                "returned {} values for chunk {id} of {} indices",
                values.len(),
                entry.plan.count
            ));
        }
        entry.values = Some(values);
        Ok(())
    }

    /// Hands every deliverable chunk to the sink.
    pub fn drain(&mut self, sink: &mut impl FnMut(Item<'_>) -> io::Result<()>) -> io::Result<()> {
        loop {
            let next = if self.ordered {
                self.entries
                    .first_entry()
                    .filter(|e| e.get().values.is_some())
                    .map(|e| e.remove())
            } else {
                let done = self.entries.iter().find(|(_, e)| e.values.is_some());
                done.map(|(&id, _)| id)
                    .and_then(|id| self.entries.remove(&id))
            };
            let Some(Entry { plan, values }) = next else {
                return Ok(());
            };
            self.next_emit = self
                .entries
                .first_key_value()
                .map_or(self.issued, |(&id, _)| id);
            let values = values.expect("only complete entries are delivered");
            for (offset, index) in plan.indices().enumerate() {
                // Decoding checked the table and `complete` the count.
                let value = values.get(offset).ok_or_else(|| {
                    io::Error::other(format!("chunk {} lost value {offset}", plan.id))
                })?;
                sink(Item {
                    position: plan.first_position + offset as u64,
                    index,
                    value,
                })?;
            }
        }
    }
}
