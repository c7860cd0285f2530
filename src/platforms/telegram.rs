//! Telegram Bot API: placeholder replaced below.
