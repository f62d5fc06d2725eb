//! What a timer is for, judged by the kernel callback it runs.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `timer_create` timers (`posix_timer_fn`), live from creation to `timer_delete`.
    PosixTimer,
    /// `timerfd_create` timers.
    Timerfd,
    /// `setitimer`/`alarm`.
    Itimer,
    /// A task sleeping with a timeout: nanosleep, poll/select/epoll_wait, futex waits.
    Sleep,
    /// Timers the kernel arms on the task's behalf (sockets, the scheduler, drivers).
    Kernel,
    /// Callback unknown.
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PosixTimer => "posix_timer",
            Self::Timerfd => "timerfd",
            Self::Itimer => "itimer",
            Self::Sleep => "sleep",
            Self::Kernel => "kernel",
            Self::Other => "other",
        }
    }
}

/// Classify by callback name (kallsyms). `None` when the callback could not be resolved.
pub fn classify(function: Option<&str>) -> Kind {
    let Some(f) = function else {
        return Kind::Other;
    };
    match f {
        "posix_timer_fn" => Kind::PosixTimer,
        "timerfd_tmrproc" | "timerfd_alarmproc" => Kind::Timerfd,
        "it_real_fn" => Kind::Itimer,
        // hrtimer sleepers (nanosleep, schedule_hrtimeout for poll/epoll/select, futex) and
        // schedule_timeout's timer_list.
        "hrtimer_wakeup" | "process_timeout" => Kind::Sleep,
        _ => Kind::Kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_facing_callbacks() {
        assert_eq!(classify(Some("posix_timer_fn")), Kind::PosixTimer);
        assert_eq!(classify(Some("timerfd_tmrproc")), Kind::Timerfd);
        assert_eq!(classify(Some("timerfd_alarmproc")), Kind::Timerfd);
        assert_eq!(classify(Some("it_real_fn")), Kind::Itimer);
        assert_eq!(classify(Some("hrtimer_wakeup")), Kind::Sleep);
        assert_eq!(classify(Some("process_timeout")), Kind::Sleep);
    }

    #[test]
    fn everything_else_is_kernel_or_other() {
        assert_eq!(classify(Some("tcp_delack_timer")), Kind::Kernel);
        assert_eq!(classify(Some("tick_nohz_handler")), Kind::Kernel);
        assert_eq!(classify(None), Kind::Other);
        assert_eq!(Kind::PosixTimer.as_str(), "posix_timer");
        assert_eq!(
            serde_json::to_string(&Kind::Timerfd).unwrap(),
            "\"timerfd\""
        );
    }
}
