<nav class="pager" aria-label="Pages">
  <span class="muted">{{pager['first']}}–{{pager['last']}} of {{pager['total']}}</span>
  % if pager['prev']:
  <a class="btn btn-quiet" href="{{pager['prev']}}" rel="prev">← Previous</a>
  % end
  % if pager['next']:
  <a class="btn btn-quiet" href="{{pager['next']}}" rel="next">Next →</a>
  % end
</nav>
