#!/usr/bin/python3
"""A test camera (run by Debian's /usr/bin/python3, which has python3-gi): Debian's gst-rtsp-server serving a live test pattern at rtsp://HOST:PORT/cam.

Usage: rtsp-server.py [--port N] [--user U --password P [--basic]] [--size WxH] [--fps N]
                      [--profile baseline|main|high] [--bframes N] [--codec h264|jpeg]
                      [--gop N] [--bitrate KBIT] [--h264-from COMMAND]
Prints one JSON line {"url": ...} once it listens; runs until killed. Credentials turn on
RTSP authentication (digest, or basic with --basic). --codec jpeg serves a stream that is not H.264, and
--bframes a stream with B-frames, for the camera's refusals.
"""
import argparse
import json
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def feed(media, command):
    """Pushes the command's access units into the media's appsrc as they come."""
    import shlex
    import subprocess
    import threading

    appsrc = media.get_element().get_by_name("src")
    proc = subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE)

    def pump():
        while True:
            head = proc.stdout.read(4)
            if len(head) < 4:
                break
            data = proc.stdout.read(int.from_bytes(head, "big"))
            if appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(data)) != Gst.FlowReturn.OK:
                break
        proc.kill()
        appsrc.emit("end-of-stream")

    threading.Thread(target=pump, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--basic", action="store_true", help="basic authentication (default: digest)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--profile", default="baseline")
    ap.add_argument("--bframes", type=int, default=0)
    ap.add_argument("--gop", type=int, default=30)
    ap.add_argument("--bitrate", type=int, default=1000)
    ap.add_argument("--codec", default="h264")
    ap.add_argument("--h264-from", help="a command writing H.264 access units to stdout, each "
                    "as a 4-byte big-endian length and Annex B bytes (bench's pattern-stream)")
    a = ap.parse_args()
    w, h = a.size.split("x")
    src = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={w},height={h},"
           f"framerate={a.fps}/1 ! videoconvert ! video/x-raw,format=I420")
    if a.codec == "jpeg":
        enc = "jpegenc ! rtpjpegpay name=pay0 pt=26"
    else:
        enc = (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} "
               f"bframes={a.bframes} bitrate={a.bitrate} ! video/x-h264,profile={a.profile} ! "
               f"rtph264pay name=pay0 pt=96 config-interval=-1")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    if a.h264_from:
        factory.set_launch("( appsrc name=src is-live=true format=time do-timestamp=true "
                           "caps=video/x-h264,stream-format=byte-stream,alignment=au ! h264parse ! "
                           "rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.connect("media-configure", lambda _f, media: feed(media, a.h264_from))
    else:
        factory.set_launch(f"( {src} ! {enc} )")
    factory.set_shared(True)
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        auth.add_digest(a.user, a.password, token)
        method = GstRtsp.RTSPAuthMethod.BASIC if a.basic else GstRtsp.RTSPAuthMethod.DIGEST
        auth.set_supported_methods(method)
        server.set_auth(auth)
        role = Gst.Structure.from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0]
        factory.add_role_from_structure(role)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(json.dumps({"error": f"cannot listen on {a.host}:{a.port}"}), flush=True)
        sys.exit(1)
    print(json.dumps({"url": f"rtsp://{a.host}:{server.get_bound_port()}/cam"}), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
