//! A queue served highest priority first, then in arrival order: how action requests wait for an
//! executor.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub struct PriorityQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    arrivals: u64,
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        PriorityQueue {
            heap: BinaryHeap::new(),
            arrivals: 0,
        }
    }
}

struct Entry<T> {
    priority: u8,
    arrival: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.arrival.cmp(&self.arrival))
    }
}

impl<T> PriorityQueue<T> {
    pub fn push(&mut self, priority: u8, item: T) {
        self.arrivals += 1;
        self.heap.push(Entry {
            priority,
            arrival: self.arrivals,
            item,
        });
    }

    /// The highest-priority item that arrived first.
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|e| e.item)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}
