% rebase('base.tpl')
<section class="panel narrow">
  <h1>{{t('login.heading')}}</h1>
  <p class="muted">{{t('login.intro')}}</p>
  <form method="post" action="/login" class="login-form" data-testid="login-form">
    % include('_csrf.tpl')
    <input type="hidden" name="next" value="{{next}}">
    <div class="field">
      <label for="f-name">{{t('login.name')}}</label>
      <input id="f-name" name="name" autocomplete="username" autocapitalize="none">
      % if legacy:
      <p class="muted small">{{t('login.name_hint')}}</p>
      % end
    </div>
    <div class="field">
      <label for="f-token">{{t('login.token')}}</label>
      <input id="f-token" name="token" type="password" autocomplete="current-password" required>
      % if error:
      <p class="field-error" data-testid="form-error">✗ {{error}}</p>
      % end
    </div>
    <button type="submit" class="btn btn-primary">{{t('login.submit')}}</button>
  </form>
</section>
