//! Password reset mails its token, then the new password, through a real
//! SMTP server (aiosmtpd from PyPI, writing a Maildir).

use crate::support::{Options, TestServer, backends};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    async fn start() -> Smtp {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let maildir = tempfile::TempDir::new().unwrap();
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir(maildir.path().join(sub)).unwrap();
        }
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start: `pip install aiosmtpd` (.ci/run does)");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Smtp { child, port, maildir }
    }

    /// Waits for the `n`-th message (1-based) and returns it.
    async fn message(&self, n: usize) -> String {
        let new = self.maildir.path().join("new");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut files: Vec<_> = std::fs::read_dir(&new).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
            files.sort_by_key(|p: &std::path::PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            if files.len() >= n {
                return read(&files[n - 1]);
            }
            assert!(Instant::now() < deadline, "no mail #{n} arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

backends! {
    async fn password_reset_by_mail(b) {
        let smtp = Smtp::start().await;
        let mut o = Options::new(b);
        o.extra_toml = format!("[smtp]\nserver = \"127.0.0.1:{}\"\nfrom = \"torii@example.com\"\n", smtp.port);
        let t = TestServer::start_with(o).await;
        t.user("dev@example.com").await;
        t.req("POST", "/1.0/users/ghost@example.com/password").send().await.expect_error(404, "user not found");

        t.req("POST", "/1.0/users/dev@example.com/password").send().await.expect(200, "");
        let mail = smtp.message(1).await;
        assert!(mail.contains("To: dev@example.com"), "{mail}");
        assert!(mail.contains("Subject: [torii] Password reset process"), "{mail}");
        let token = mail
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 40 && l.bytes().all(|c| c.is_ascii_hexdigit()))
            .expect("a token line")
            .to_string();

        t.req("POST", "/1.0/users/dev@example.com/password").form(&[("token", "0000")]).send().await
            .expect_error(500, "Invalid token");
        // The old password still works until the reset is finished.
        t.login("dev@example.com", "123456").await;
        t.req("POST", "/1.0/users/dev@example.com/password").form(&[("token", &token)]).send().await.expect(200, "");
        let mail = smtp.message(2).await;
        let lines: Vec<&str> = mail.lines().map(str::trim).collect();
        let at = lines.iter().position(|l| *l == "Your password was reset. Your new password is:").expect("password mail");
        let password = lines[at + 2];
        assert_eq!(password.len(), 12, "{mail}");
        t.login("dev@example.com", password).await;
        t.req("POST", "/1.0/auth/login").form(&[("email", "dev@example.com"), ("password", "123456")]).send().await
            .expect_status(401);
        // A token works once.
        t.req("POST", "/1.0/users/dev@example.com/password").form(&[("token", &token)]).send().await
            .expect_error(500, "Invalid token");
        t.stop().await;
    }
}

backends! {
    async fn reset_without_smtp_is_a_clear_error(b) {
        let t = TestServer::start(b).await;
        t.user("dev@example.com").await;
        t.req("POST", "/1.0/users/dev@example.com/password").send().await
            .expect_error(500, "mail is not configured: set [smtp] server");
        t.stop().await;
    }
}
