//! The MCP server: the tools of [`crate::tools`] served on standard input
//! and output with the official SDK, `rmcp`, on a current-thread tokio
//! runtime; and `qmp-mcp`'s main (arguments, signals, exit statuses).

use std::io::Write;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};

use crate::calls;
use crate::cli::McpArgs;
use crate::targets::{Pool, Settings};
use crate::tools::{self, Mode};

/// The MCP side: the tools and the targets they use.
pub struct Server {
    pool: Arc<Pool>,
    mode: Mode,
    tools: Vec<Tool>,
}

impl Server {
    /// A server for the targets of `pool`, letting through what `mode`
    /// says.
    pub fn new(pool: Arc<Pool>, mode: Mode) -> Server {
        Server {
            pool,
            mode,
            tools: tools::list(mode),
        }
    }

    fn instructions(&self) -> String {
        let labels: Vec<String> = self.pool.slots().iter().map(|s| s.label.clone()).collect();
        let targets = if labels.is_empty() {
            "the running libvirt domains (call `targets` to list them)".to_owned()
        } else {
            labels.join(", ")
        };
        format!(
            "QEMU VMs through QMP. Targets: {targets}. {} Call `targets` first to see \
             which VMs are reachable, `describe` to learn a command's arguments, then \
             `execute`.",
            if self.mode.allow_writes {
                "Every command is let through (--allow-writes)."
            } else {
                "Read-only: commands that could change a VM are refused."
            }
        )
    }
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let mut implementation = Implementation::new("qmp-mcp", env!("CARGO_PKG_VERSION"));
        implementation.title = Some("QEMU QMP (qmp-shell)".to_owned());
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(implementation)
            .with_instructions(self.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.clone()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let answer = calls::call(&self.pool, self.mode, &request.name, request.arguments).await;
        let content: Vec<ContentBlock> = answer.texts.into_iter().map(ContentBlock::text).collect();
        Ok(if answer.error {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        }
        .into())
    }
}

/// Print `ERROR: MSG` on standard error; the exit status 1.
fn die(msg: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "ERROR: {msg}");
    1
}

/// The `qmp-mcp` program; returns the exit status.
pub fn main() -> i32 {
    if let Some(code) = qmp_shell::generate::run_if_asked(crate::cli::command, &crate::manual::PAGE)
    {
        return code;
    }
    let args = McpArgs::parse_args();
    let settings = Settings {
        guest_agent: args.targets.skip_negotiation,
        timeout: args.server.timeout,
    };
    let pool = match Pool::new(&args.targets, settings) {
        Ok(pool) => Arc::new(pool),
        Err(msg) => qmp_shell::cli::usage_error("qmp-mcp", crate::cli::USAGE, &msg),
    };
    let mode = Mode {
        allow_writes: args.server.allow_writes,
        guest_agent: args.targets.skip_negotiation,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return die(&format!("cannot start the runtime: {err}")),
    };
    let code = runtime.block_on(serve(Arc::clone(&pool), mode));
    pool.close_all();
    // Ends the process now: tokio's reader of standard input cannot be
    // cancelled, and a runtime shut down normally would wait for it.
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

/// Serve until the client closes standard input (0) or a signal comes
/// (128 + it).
async fn serve(pool: Arc<Pool>, mode: Mode) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let server = Server::new(pool, mode);
    let (mut int, mut term, mut hup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        _ => return die("cannot handle signals"),
    };
    let running = async {
        match server.serve(rmcp::transport::stdio()).await {
            Ok(service) => match service.waiting().await {
                Ok(_) => 0,
                Err(err) => die(&format!("the MCP service failed: {err}")),
            },
            // The client went before the session began: nothing to say.
            Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => 0,
            Err(err) => die(&format!("the MCP session could not start: {err}")),
        }
    };
    tokio::select! {
        code = running => code,
        _ = int.recv() => 128 + libc::SIGINT,
        _ = term.recv() => 128 + libc::SIGTERM,
        _ = hup.recv() => 128 + libc::SIGHUP,
    }
}
