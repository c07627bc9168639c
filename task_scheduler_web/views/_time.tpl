% if iso:
<time datetime="{{iso}}" title="{{h['ago'](iso)}}">{{h['time'](iso)}}</time>
% else:
<span class="muted">—</span>
% end
