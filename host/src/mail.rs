//! Outgoing mail through the `[smtp]` server (password resets).

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

use crate::config::SmtpConfig;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail is not configured: set [smtp] server")]
    NotConfigured,
    #[error("invalid mail address: {0}")]
    Address(String),
    #[error("failed to send mail: {0}")]
    Send(String),
}

pub struct Mailer {
    config: SmtpConfig,
}

impl Mailer {
    pub fn new(config: SmtpConfig) -> Mailer {
        Mailer { config }
    }

    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let server = self.config.server.as_deref().ok_or(MailError::NotConfigured)?;
        let (host, port) = match server.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| MailError::Send(format!("bad port in {server:?}")))?),
            None => (server, 25),
        };
        let from: Mailbox = self.config.from.parse().map_err(|_| MailError::Address(self.config.from.clone()))?;
        let to: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_string()))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .body(body.to_string())
            .map_err(|e| MailError::Send(e.to_string()))?;
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(10)));
        if let (Some(user), Some(password)) = (&self.config.user, &self.config.password) {
            transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
        }
        transport.build().send(message).await.map_err(|e| MailError::Send(e.to_string()))?;
        Ok(())
    }
}
