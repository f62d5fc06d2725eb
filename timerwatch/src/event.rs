//! Decoding ring-buffer records into typed events.
//!
//! The kernel writes [`timerwatch_common::Event`] or [`timerwatch_common::StackEvent`] records;
//! this turns their bytes into values the table can match on, rejecting anything malformed instead
//! of trusting it.

use timerwatch_common::{
    flags, Event, EventKind, StackCopyEvent, StackEvent, COMM_LEN, MAX_STACK_DEPTH, USER_STACK_COPY,
};

/// The user stack and comm that come with a timer's first arm or a POSIX timer's creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callstack {
    pub comm: String,
    pub user_sp: u64,
    pub scan: Vec<u64>,
    /// Innermost first.
    pub frames: Vec<u64>,
    /// User registers and stack bytes for CFI unwinding, where the probe copied them.
    pub copy: Option<StackCopy>,
}

/// The user stack as it was at the syscall: registers and the bytes from `sp` upwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackCopy {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub bytes: Vec<u8>,
}

/// A decoded record: the fixed header plus, for stack records, the stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: EventKind,
    pub ts_ns: u64,
    pub timer: u64,
    pub function: u64,
    pub expires: u64,
    pub arg: u64,
    pub tgid: u32,
    pub tid: u32,
    pub cur_tgid: u32,
    pub timer_list: bool,
    pub new_owner: bool,
    /// Expiries of hrtimers: ns from the requested expiry to the actual one.
    pub slack_ns: Option<u64>,
    pub stack: Option<Callstack>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort(usize),
    UnknownKind(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort(n) => write!(f, "record of {n} bytes is shorter than its header"),
            Self::UnknownKind(k) => write!(f, "record kind {k} is unknown"),
        }
    }
}

fn comm_string(raw: &[u8; COMM_LEN]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Read a `T` from the front of `bytes` without assuming alignment.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= std::mem::size_of::<T>())
        // SAFETY: length checked; T is a #[repr(C)] integer-only type valid for any bit pattern.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let ev: Event = read(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
    let kind = EventKind::from_u8(ev.kind).ok_or(DecodeError::UnknownKind(ev.kind))?;
    let stack = if ev.flags & flags::HAS_STACK != 0 {
        let se: StackEvent = read(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
        let n = (ev.stack_len as usize).min(MAX_STACK_DEPTH);
        let copy = if ev.flags & flags::HAS_STACK_COPY != 0 {
            let c: StackCopyEvent = read(bytes).ok_or(DecodeError::TooShort(bytes.len()))?;
            let len = (c.len as usize).min(USER_STACK_COPY);
            (len > 0).then(|| StackCopy {
                ip: c.ip,
                sp: c.sp,
                bp: c.bp,
                bytes: c.bytes[..len].to_vec(),
            })
        } else {
            None
        };
        Some(Callstack {
            comm: comm_string(&se.comm),
            user_sp: se.user_sp,
            scan: se.scan.to_vec(),
            frames: se.stack[..n]
                .iter()
                .copied()
                .take_while(|&a| a != 0)
                .collect(),
            copy,
        })
    } else {
        None
    };
    Ok(Record {
        kind,
        ts_ns: ev.ts_ns,
        timer: ev.timer,
        function: ev.function,
        expires: ev.expires,
        arg: ev.arg,
        tgid: ev.tgid,
        tid: ev.tid,
        cur_tgid: ev.cur_tgid,
        timer_list: ev.flags & flags::TIMER_LIST != 0,
        new_owner: ev.flags & flags::NEW_OWNER != 0,
        slack_ns: (ev.flags & flags::SLACK != 0).then_some(ev.arg),
        stack,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over #[repr(C)] plain-integer types.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn decodes_small_record() {
        let ev = Event {
            ts_ns: 5,
            timer: 0xffff_8880_0000_1000,
            function: 0xffff_ffff_8100_0000,
            expires: 99,
            tgid: 42,
            tid: 43,
            cur_tgid: 7,
            kind: EventKind::Expire as u8,
            flags: flags::TIMER_LIST,
            ..Event::default()
        };
        let r = decode(&bytes_of(&ev)).unwrap();
        assert_eq!(r.kind, EventKind::Expire);
        assert_eq!((r.tgid, r.tid, r.cur_tgid), (42, 43, 7));
        assert!(r.timer_list);
        assert!(!r.new_owner);
        assert_eq!(r.stack, None);
    }

    #[test]
    fn decodes_stack_record_and_trims_frames() {
        let mut se = StackEvent::default();
        se.event.kind = EventKind::Start as u8;
        se.event.flags = flags::HAS_STACK | flags::NEW_OWNER;
        se.event.stack_len = 3;
        se.comm[..4].copy_from_slice(b"leak");
        se.stack[..3].copy_from_slice(&[0x401000, 0x401100, 0x401200]);
        se.stack[3] = 0xdead; // beyond stack_len: must be ignored
        se.user_sp = 0x7ffd_0000;
        se.scan[0] = 0x401050;
        let r = decode(&bytes_of(&se)).unwrap();
        let s = r.stack.unwrap();
        assert!(r.new_owner);
        assert_eq!(s.comm, "leak");
        assert_eq!(s.frames, vec![0x401000, 0x401100, 0x401200]);
        assert_eq!(s.scan[0], 0x401050);
        assert_eq!(s.user_sp, 0x7ffd_0000);
        assert_eq!(s.copy, None);
    }

    #[test]
    fn decodes_stack_copy_and_bounds_its_length() {
        let mut c = StackCopyEvent {
            base: StackEvent::default(),
            ip: 0x401000,
            sp: 0x7ffd_0000,
            bp: 1,
            len: 16,
            bytes: [0; USER_STACK_COPY],
        };
        c.base.event.kind = EventKind::Start as u8;
        c.base.event.flags = flags::HAS_STACK | flags::HAS_STACK_COPY;
        c.bytes[..2].copy_from_slice(&[7, 8]);
        let s = decode(&bytes_of(&c)).unwrap().stack.unwrap();
        let copy = s.copy.unwrap();
        assert_eq!((copy.ip, copy.sp, copy.bp), (0x401000, 0x7ffd_0000, 1));
        assert_eq!(copy.bytes.len(), 16);
        assert_eq!(&copy.bytes[..3], &[7, 8, 0]);
        // A length beyond the buffer is the kernel's bug or hostile: cut to the buffer.
        c.len = u64::MAX;
        let copy = decode(&bytes_of(&c)).unwrap().stack.unwrap().copy.unwrap();
        assert_eq!(copy.bytes.len(), USER_STACK_COPY);
        // The flag on a plain stack record's length: too short, not a read past the end.
        let mut se = StackEvent::default();
        se.event.kind = EventKind::Start as u8;
        se.event.flags = flags::HAS_STACK | flags::HAS_STACK_COPY;
        assert!(matches!(
            decode(&bytes_of(&se)),
            Err(DecodeError::TooShort(_))
        ));
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::TooShort(10)));
        let ev = Event {
            kind: 200,
            ..Event::default()
        };
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::UnknownKind(200)));
        // A header that claims a stack but is cut short.
        let ev = Event {
            kind: 1,
            flags: flags::HAS_STACK,
            ..Event::default()
        };
        assert!(matches!(
            decode(&bytes_of(&ev)),
            Err(DecodeError::TooShort(_))
        ));
    }
}
