//! Interactive terminals in containers (`tsuru app shell`): an exec with a
//! TTY whose input and output the caller relays, resized to the client's
//! window. The engine call that opens it is bounded like every other; the
//! session itself lasts as long as its caller keeps it (the shell handler
//! bounds that).

use super::{Engines, EngineError, docker_error};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use futures_util::Stream;
use std::pin::Pin;
use tokio::io::AsyncWrite;

/// What a terminal is opened with.
pub struct TerminalSpec {
    pub cmd: Vec<String>,
    /// `TERM` in the terminal.
    pub term: String,
    pub width: u16,
    pub height: u16,
}

/// An open terminal: what it prints, where what is typed goes.
pub struct Terminal {
    pub output: Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    pub control: Control,
}

/// The terminal's exec on its engine.
pub struct Control {
    client: Docker,
    exec: String,
    address: String,
}

impl Control {
    /// Sets the terminal's window size.
    pub async fn resize(&self, width: u16, height: u16) -> Result<(), EngineError> {
        let options = ResizeExecOptions { width, height };
        self.client.resize_exec(&self.exec, options).await.map_err(|e| docker_error(&self.address, "resize terminal", e))
    }
}

impl Engines {
    /// Opens a terminal running `spec.cmd` in running container `id`.
    pub async fn open_terminal(&self, address: &str, id: &str, spec: TerminalSpec) -> Result<Terminal, EngineError> {
        let TerminalSpec { cmd, term, width, height } = spec;
        let (client, exec, output, input) = self
            .call(address, "open terminal", async |d| {
                let options = CreateExecOptions {
                    cmd: Some(cmd),
                    env: Some(vec![format!("TERM={term}")]),
                    attach_stdin: Some(true),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(true),
                    ..Default::default()
                };
                let exec = d.create_exec(id, options).await?;
                let start = StartExecOptions { detach: false, tty: true, output_capacity: Some(64 * 1024) };
                match d.start_exec(&exec.id, Some(start)).await? {
                    StartExecResults::Attached { output, input } => Ok((d, exec.id, output, input)),
                    StartExecResults::Detached => Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 500,
                        message: "the engine detached the terminal".into(),
                    }),
                }
            })
            .await?;
        let terminal = Terminal { output, input, control: Control { client, exec, address: address.to_string() } };
        if width > 0 && height > 0 {
            terminal.control.resize(width, height).await?;
        }
        Ok(terminal)
    }
}
