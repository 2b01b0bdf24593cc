//! Small programs that embed the Kraken libraries; see the `[[example]]` targets of this
//! package. Each opens with the command that runs it.
