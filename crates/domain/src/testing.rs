//! Given / when / then for aggregate rules: `given(id, past events).when(command).then(events)`.

use crate::{Aggregate, Rejection};

pub fn given<A: Aggregate>(id: A::Id, history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let history: Vec<A::Event> = history.into_iter().collect();
    Given {
        id,
        state: A::replay(&history).expect("the history applies"),
    }
}

pub struct Given<A: Aggregate> {
    id: A::Id,
    state: A,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> Then<A> {
        let outcome = self.state.decide(self.id, &command);
        Then {
            state: self.state,
            outcome,
        }
    }
}

pub struct Then<A: Aggregate> {
    state: A,
    outcome: Result<Vec<A::Event>, Rejection>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the events, and returns the state they lead to for further checks.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.outcome, Ok(expected.clone()));
        let mut state = self.state;
        for event in &expected {
            state.apply(event).expect("decided events apply");
        }
        state
    }

    #[track_caller]
    pub fn then_rejected(self, expected: Rejection) {
        assert_eq!(self.outcome, Err(expected));
    }
}
